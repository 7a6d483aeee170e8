"""Where a config's weights, LoRAs and bench come from: local folders, tiny twins or hub downloads,
with the marker files that prove them complete (the download rules look their repos up here).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from stepscope.bench import SAMPLE_FILES, sample_files, sample_folders
from stepscope.jobs.config_checks import config_error, workflow_path
from stepscope.models.hub import allow_patterns
from stepscope.models.weight_layouts import family_sources

SOURCE_MARKER = ".stepscope_source.json"  # written last by a download (or the demo bench)
TINY_MARKER = "stepscope_tiny.json"
FAMILY_SOURCE_REVISION = "main"  # a family's other repo (LTX-2.3: Gemma-3) as the seed loads it


def slug(repo_id: str) -> str:
    """A repo id as one path component (owner--name)."""
    owner, _, name = repo_id.partition("/")
    return f"{owner}--{name}" if name else owner



class SourcePlan:
    """The sources of one validated config; `basedir`: the workflow's folder (relative local paths)."""

    def __init__(self, config: dict[str, Any], *, basedir: str):
        self.config = config
        self.basedir = Path(basedir)

    def results(self, path: str) -> str:
        """A path under the results folder (config `results`)."""
        return f"{self.config['results']}/{path}"

    def resources(self, path: str) -> str:
        """A path under the resources folder (config `resources`)."""
        return f"{self.config['resources']}/{path}"

    def workflow_path(self, path: str) -> Path:
        return workflow_path(path, self.basedir)

    # ----- models and LoRAs ----------------------------------------------------------------------
    def family(self, variant: str) -> str:
        return self.config["models"][self.config["variants"][variant]["model"]]["family"]

    def model_dir(self, name: str) -> str:
        model = self.config["models"][name]
        if model["local_path"]:  # e.g. the repository's trained twin
            return str(self.workflow_path(model["local_path"]))
        if model["tiny"]:
            return self.resources(f"tiny/{name}")
        return self.resources(f"hub/models/{slug(model['repo_id'])}/{model['revision']}")

    def model_marker(self, name: str) -> str | list[str]:
        """The file that proves a weights folder is complete ([] for a user's local folder)."""
        model = self.config["models"][name]
        if model["local_path"]:
            return []
        if model["tiny"]:
            return f"{self.model_dir(name)}/{TINY_MARKER}"
        return f"{self.model_dir(name)}/{SOURCE_MARKER}"

    @functools.cache  # noqa: B019 - one plan per process; the config does not change
    def source_entries(self, name: str) -> dict[str, dict[str, Any]]:
        """A model's other repos (source -> {repo_id, revision, local_path}), for downloaded models the
        family's defaults (LTX-2.3: the Gemma-3 repo the seed loads); {} when one folder holds all.
        Unknown source names are refused by check_config."""
        model = self.config["models"][name]
        entries = {}
        for source, repo_id in family_sources(model["family"]).items():
            if source in model["sources"]:  # an entry giving only a local_path keeps the family's repo id
                entries[source] = {"repo_id": repo_id, **model["sources"][source]}
            elif not (model["local_path"] or model["tiny"]):
                entries[source] = {"repo_id": repo_id, "revision": FAMILY_SOURCE_REVISION}
            # else: looked for inside the model's folder (the seed's ./models/<repo_id>)
        return entries

    def source_dir(self, entry: dict[str, Any]) -> str:
        if entry.get("local_path"):
            return entry["local_path"]
        return self.resources(f"hub/models/{slug(entry['repo_id'])}/{entry['revision']}")

    def model_sources(self, name: str) -> dict[str, str]:
        """Folders of a model's other repos, as the loader takes them (`sources`)."""
        return {source: self.source_dir(entry) for source, entry in self.source_entries(name).items()}

    def model_markers(self, name: str) -> list[str]:
        """The files that prove a model's folders are complete (none for a user's local folders)."""
        markers = [marker] if (marker := self.model_marker(name)) else []
        for entry in self.source_entries(name).values():
            if not entry.get("local_path"):
                markers.append(f"{self.source_dir(entry)}/{SOURCE_MARKER}")
        return markers

    def lora_dir(self, name: str) -> str:
        lora = self.config["loras"][name]
        if lora["local_path"]:
            return lora["local_path"]
        if lora.get("tiny_for"):
            return self.resources(f"tiny/loras/{name}")
        return self.resources(f"hub/loras/{slug(lora['repo_id'])}/{lora['revision']}")

    def lora_files(self, variant: str) -> list[str]:
        """Inputs for a variant's LoRAs: the files themselves, or a download's completion marker. A
        missing file of a local_path LoRA is no planning error (that would stop every variant): the
        variant's sampling jobs fail, naming it."""
        inputs = []
        for item in self.config["variants"][variant]["loras"]:
            lora = self.config["loras"][item["lora"]]
            path = f"{self.lora_dir(item['lora'])}/{item['file']}"
            if lora.get("repo_id") and not lora["local_path"]:
                inputs.append(f"{self.lora_dir(item['lora'])}/{SOURCE_MARKER}")
            elif not lora["local_path"] or os.path.exists(path):
                inputs.append(path)
        return sorted(set(inputs))

    def lora_params(self, variant: str) -> list[dict[str, Any]]:
        return [
            {"path": f"{self.lora_dir(item['lora'])}/{item['file']}", "target": item["target"], "alpha": item["alpha"]}
            for item in self.config["variants"][variant]["loras"]
        ]

    def lora_target_of_file(self, lora: str, file: str) -> str:
        """The expert a tiny LoRA file is made for: the target variants use it with (dit if none)."""
        for variant in self.config["variants"].values():
            for item in variant["loras"]:
                if item["lora"] == lora and item["file"] == file:
                    return item["target"]
        return "dit"

    def weights_inputs(self, variant: str) -> dict[str, list[str]]:
        return {
            "weights": self.model_markers(self.config["variants"][variant]["model"]),
            "loras": self.lora_files(variant),
        }

    @functools.cached_property
    def hub_repos(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Every hub repo the config downloads, by (kind, slug, revision): repo id and allow patterns.

        A model's main repo and its family's other repos (LTX-2.3: Gemma-3) each get their own
        folder and download job, with exactly the files its part of the loader layout opens."""
        repos = {}
        for name, model in self.config["models"].items():
            if model.get("repo_id") and not model["local_path"] and not model["tiny"]:
                repos[("models", slug(model["repo_id"]), model["revision"])] = {
                    "repo_id": model["repo_id"],
                    "patterns": allow_patterns(model["family"]),
                }
            for source, entry in self.source_entries(name).items():
                if not entry.get("local_path"):
                    repos[("models", slug(entry["repo_id"]), entry["revision"])] = {
                        "repo_id": entry["repo_id"],
                        "patterns": allow_patterns(model["family"], source),
                    }
        for lora in self.config["loras"].values():
            if lora.get("repo_id") and not lora["local_path"]:
                repos[("loras", slug(lora["repo_id"]), lora["revision"])] = {
                    "repo_id": lora["repo_id"],
                    "patterns": lora["files"],
                }
        return repos

    def hub_lookup(self, kind: str, slug_name: str, revision: str) -> dict[str, Any]:
        """The download behind a hub path (kind: models | loras): repo id and allow patterns."""
        try:
            return self.hub_repos[(kind, slug_name, revision)]
        except KeyError:
            raise ValueError(f"no configured {kind} repo {slug_name!r} at revision {revision!r}") from None

    # ----- the bench and inputs ------------------------------------------------------------------
    def bench_root(self) -> str:
        bench = self.config["bench"]
        if bench["source"] == "local":
            if not bench["local_path"]:
                config_error("bench.local_path", "source is 'local' but no local_path is given")
            return bench["local_path"]
        if bench["source"] == "demo":
            return self.resources("demo-bench")
        return self.resources(f"hub/datasets/{slug(bench['repo_id'])}/{bench['revision']}")

    def bench_marker(self) -> str | list[str]:
        if self.config["bench"]["source"] == "local":
            return []
        return f"{self.bench_root()}/{SOURCE_MARKER}"

    def manifest_inputs(self) -> list[str]:
        """The bench's marker, or for a local bench the files it scans: a fixed, added or removed
        sample file then rebuilds the manifest (a local bench has no marker that would change)."""
        bench = self.config["bench"]
        if bench["source"] != "local":
            return [self.bench_marker()]
        folders = sample_folders(self.bench_root(), bench["splits"], bench["task_globs"], bench["samples_per_task"])
        files = (path for folder in folders for path in sample_files(folder, SAMPLE_FILES))
        return [path for path in files if os.path.exists(path)]
