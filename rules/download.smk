"""Downloads from the Hugging Face hub (local rules: compute nodes are often offline) and tiny twins."""


localrules:
    download_model,
    download_lora,
    download_bench,


def hub_lookup(kind, slug_name, revision):
    """The config entry behind a download path (kind: models | loras)."""
    for name, entry in config[kind].items():
        if entry.get("repo_id") and slug(entry["repo_id"]) == slug_name and entry.get("revision", "main") == revision:
            return name, entry
    raise ValueError(f"no {kind} entry with repo {slug_name!r} at revision {revision!r}")


rule download_model:
    output:
        RESOURCES + "/hub/models/{slug}/{revision}/.stepscope_source.json",
    params:
        repo_id=lambda wc: hub_lookup("models", wc.slug, wc.revision)[1]["repo_id"],
        repo_type="model",
        allow_patterns=lambda wc: allow_patterns_for(hub_lookup("models", wc.slug, wc.revision)[1]["family"]),
    log:
        "logs/download/models/{slug}@{revision}.log",
    retries: 3
    script:
        "../workflow/scripts/download.py"


rule download_lora:
    output:
        RESOURCES + "/hub/loras/{slug}/{revision}/.stepscope_source.json",
    params:
        repo_id=lambda wc: hub_lookup("loras", wc.slug, wc.revision)[1]["repo_id"],
        repo_type="model",
        allow_patterns=lambda wc: hub_lookup("loras", wc.slug, wc.revision)[1]["files"],
    log:
        "logs/download/loras/{slug}@{revision}.log",
    retries: 3
    script:
        "../workflow/scripts/download.py"


rule download_bench:
    output:
        RESOURCES + "/hub/datasets/{slug}/{revision}/.stepscope_source.json",
    params:
        repo_id=config["bench"]["repo_id"],
        repo_type="dataset",
        allow_patterns=[f"{split}/**" for split in config["bench"]["splits"]],
    log:
        "logs/download/datasets/{slug}@{revision}.log",
    retries: 3
    script:
        "../workflow/scripts/download.py"


rule tiny_weights:
    output:
        RESOURCES + "/tiny/{model}/stepscope_tiny.json",
    params:
        family=lambda wc: config["models"][wc.model]["family"],
    log:
        "logs/tiny/{model}.log",
    script:
        "../workflow/scripts/tiny_weights.py"


rule tiny_lora:
    input:
        lambda wc: model_marker(config["loras"][wc.lora]["tiny_for"]),
    output:
        RESOURCES + "/tiny/loras/{lora}/{file}",
    params:
        family=lambda wc: config["models"][config["loras"][wc.lora]["tiny_for"]]["family"],
        weights=lambda wc: model_dir(config["loras"][wc.lora]["tiny_for"]),
        target=lambda wc: lora_target_of_file(wc.lora, wc.file),
        seed=lambda wc: config["loras"][wc.lora]["files"].index(wc.file),
    log:
        "logs/tiny/loras/{lora}/{file}.log",
    script:
        "../workflow/scripts/tiny_lora.py"
