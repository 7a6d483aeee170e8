#!/bin/bash
# One device call of the GPU dress rehearsal (issue #14): bash benchmarks/gpu_rehearsal.sh STAGE SECONDS
#   wan21: real-shape Wan2.1-I2V-14B-720P written, then the workflow (480x832 base, 1024x1024 LoRA,
#          2 steps, step decoding, analysis), then the step-decoding benchmark if time is left.
#   wan22: real-shape Wan2.2-I2V-A14B (umT5/VAE linked from wan21 when there), then the workflow at
#          480x832 with one noise_frame probe job.
#   ltx23: real-shape LTX-2.3 (Gemma-3 in /dev/shm), the workflow at 1024x1024 (LoRA) then 480x832.
#   seedcost: the whole seed analysis per sample over one plain sampling (gpu_overhead.py
#          --seed-analysis --record workflow, A14B shapes at 480x832, 9 steps), then Wan2.2 through the workflow at
#          480x832 if time is left.
# Stops itself inside SECONDS; what comes back is under $OUT (raw reports, logs).
set -uo pipefail
stage=$1
budget=$2
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
W=${W:-/root/w}
mkdir -p "$W" "$OUT"
left() { echo $((budget - SECONDS - ${1:-0})); }
{ df -h / /dev/shm; free -g; nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv; } >"$OUT/machine_$stage.txt" 2>&1
report() {  # family tag, rehearsal folder
    cp "$2/rehearsal.json" "$OUT/rehearsal_raw_$1.json"
    cp "$2/snakemake.log" "$OUT/snakemake_$1.log"
    tar czf "$OUT/logs_$1.tgz" -C "$2/results" logs benchmarks
}
case $stage in
wan21)
    python3 benchmarks/real_shape_weights.py weights --family wan2.1 --out $W/wan21 || exit 1
    python3 benchmarks/real_shape_weights.py lora --family wan2.1 --out $W/lora21 --rank 32 || exit 1
    echo "weights written at ${SECONDS}s"
    python3 benchmarks/rehearsal.py --family wan2.1 --weights $W/wan21 --loras $W/lora21 --out $W/reh21 \
        --steps 2 --gpu-gib 80 --cores 16 --no-probe --drop-caches --timeout "$(left 75)" >/dev/null
    report wan21 $W/reh21
    echo "workflow done at ${SECONDS}s"
    if [ "$(left)" -gt 60 ]; then
        timeout "$(left 8)" python3 benchmarks/decode_bench.py --out "$OUT/decode_per_call.json" --repeats 2 \
            --no-tiled --sizes 480x832
    fi
    ;;
wan22)
    rm -f $W/wan21/diffusion_pytorch_model-*  # the disk holds one 14B DiT at a time
    python3 benchmarks/real_shape_weights.py weights --family wan2.2 --out $W/wan22 --link-experts --reuse $W/wan21 || exit 1
    python3 benchmarks/real_shape_weights.py lora --family wan2.2 --out $W/lora22 --rank 32 || exit 1
    echo "weights written at ${SECONDS}s"
    python3 benchmarks/rehearsal.py --family wan2.2 --weights $W/wan22 --loras $W/lora22 --out $W/reh22 \
        --variants r480-base --steps 2 --gpu-gib 80 --cores 16 --drop-caches --timeout "$(left 15)" >/dev/null
    report wan22 $W/reh22
    ;;
ltx23)  # 38 + 24 GB exceed the 64 GB disk, so Gemma goes to /dev/shm (host RAM)
    python3 benchmarks/real_shape_weights.py weights --family ltx2.3 --out $W/ltx23 --gemma-dir /dev/shm/gemma || exit 1
    python3 benchmarks/real_shape_weights.py lora --family ltx2.3 --out $W/lora23 --rank 32 || exit 1
    echo "weights written at ${SECONDS}s"
    python3 benchmarks/rehearsal.py --family ltx2.3 --weights $W/ltx23 --loras $W/lora23 --out $W/reh23 \
        --variants r1024-vbvr r480-base --no-probe --steps 2 --gpu-gib 80 --cores 16 --drop-caches --timeout "$(left 15)" >/dev/null
    report ltx23 $W/reh23
    ;;
seedcost)
    timeout "$(left 10)" python3 benchmarks/gpu_overhead.py --out "$OUT" --steps 9 --resolutions 480x832 --record workflow \
        --skip-load --seed-analysis
    echo "seed analysis cost done at ${SECONDS}s"
    if [ "$(left)" -gt 300 ]; then
        python3 benchmarks/real_shape_weights.py weights --family wan2.2 --out $W/wan22 --link-experts || exit 1
        python3 benchmarks/real_shape_weights.py lora --family wan2.2 --out $W/lora22 --rank 32 || exit 1
        python3 benchmarks/rehearsal.py --family wan2.2 --weights $W/wan22 --loras $W/lora22 --out $W/reh22 \
            --variants r480-base --no-probe --steps 2 --gpu-gib 80 --cores 16 --timeout "$(left 15)" >/dev/null
        report wan22_480 $W/reh22
    fi
    ;;
tiny)  # the same flow on a CPU
    python3 benchmarks/rehearsal.py --tiny --family wan2.1 --out $W/reh-tiny --steps 2 --no-probe --cores 2 \
        --timeout "$(left 10)" >/dev/null
    report tiny $W/reh-tiny
    ;;
esac
echo "stage $stage done at ${SECONDS}s"
ls -la "$OUT"
