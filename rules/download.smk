"""Downloads from the Hugging Face hub (local rules: compute nodes are often offline) and tiny twins."""


localrules:
    download_model,
    download_lora,
    download_bench,


rule download_model:
    output:
        resources("hub/models/{slug}/{revision}/.stepscope_source.json"),
    log:
        resources("logs/download/models/{slug}@{revision}.log"),
    retries: 3
    conda:
        "../envs/cpu.yaml"
    params:
        repo_id=lambda wc: PLAN.hub_lookup("models", wc.slug, wc.revision)["repo_id"],
        repo_type="model",
        allow_patterns=lambda wc: PLAN.hub_lookup("models", wc.slug, wc.revision)[
            "patterns"
        ],
    script:
        "../workflow/scripts/download.py"


rule download_lora:
    output:
        resources("hub/loras/{slug}/{revision}/.stepscope_source.json"),
    log:
        resources("logs/download/loras/{slug}@{revision}.log"),
    retries: 3
    conda:
        "../envs/cpu.yaml"
    params:
        repo_id=lambda wc: PLAN.hub_lookup("loras", wc.slug, wc.revision)["repo_id"],
        repo_type="model",
        allow_patterns=lambda wc: PLAN.hub_lookup("loras", wc.slug, wc.revision)[
            "patterns"
        ],
    script:
        "../workflow/scripts/download.py"


rule download_bench:
    output:
        resources("hub/datasets/{slug}/{revision}/.stepscope_source.json"),
    log:
        resources("logs/download/datasets/{slug}@{revision}.log"),
    retries: 3
    conda:
        "../envs/cpu.yaml"
    params:
        repo_id=config["bench"]["repo_id"],
        repo_type="dataset",
        allow_patterns=[f"{split}/**" for split in config["bench"]["splits"]],
    script:
        "../workflow/scripts/download.py"


rule tiny_weights:
    output:
        resources("tiny/{model}/stepscope_tiny.json"),
    log:
        resources("logs/tiny/{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        family=lambda wc: config["models"][wc.model]["family"],
    script:
        "../workflow/scripts/tiny_weights.py"


rule tiny_lora:
    input:
        lambda wc: PLAN.model_marker(config["loras"][wc.lora]["tiny_for"]),
    output:
        resources("tiny/loras/{lora}/{file}"),
    log:
        resources("logs/tiny/loras/{lora}/{file}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        family=lambda wc: config["models"][config["loras"][wc.lora]["tiny_for"]][
            "family"
        ],
        weights=lambda wc: model_dir(config["loras"][wc.lora]["tiny_for"]),
        target=lambda wc: PLAN.lora_target_of_file(wc.lora, wc.file),
        seed=lambda wc: config["loras"][wc.lora]["files"].index(wc.file),
    script:
        "../workflow/scripts/tiny_lora.py"
