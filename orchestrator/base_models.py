"""Which base models a job may name, and what can be checked about one before anything runs.

A job names its base model by a name the server knows: a registered model
(orchestrator.model_registry; looked up first), the default tiny model, a directory under the
model root (`RELAYTUNE_MODEL_ROOT`), or a name the operator allowed
(`RELAYTUNE_ALLOWED_MODELS`, e.g. a Hugging Face id already in the workers' cache). Any other
name, an absolute path outside the root or a `..` walk out of it included, gets one and the
same `unknown_model` error, so a tenant cannot probe the server's file system.

The model's `config.json` (and processor config) are read without loading weights, so the
LoRA targets and the image-size bounds are refused at submit rather than in a paid worker.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InvalidRequest
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import PROJECTIONS
from orchestrator.settings import TINY_MODEL_NAME, Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# Families whose language model is a Qwen decoder: its LoRA-able linear layers are PROJECTIONS.
QWEN_VL_MODEL_TYPES = frozenset({"qwen3_vl", "qwen2_5_vl", "qwen2_vl"})
# Tokens per image when a job sets no max_pixels: Qwen3-VL's processor would allow ~16k, which
# overflows max_length (and GPU memory) with ordinary photos. The worker's preprocess uses it.
DEFAULT_MAX_IMAGE_TOKENS = 1024
MAX_LISTED = 20
MAX_NAME_LENGTH = 512  # jobs.base_model's column


@dataclass(frozen=True)
class KnownModel:
    name: str  # what the job stores and shows: never a server path the user did not type
    location: str  # what a worker loads: a local directory or a hub id
    config: dict[str, Any] | None  # config.json, when it can be read here
    processor: dict[str, Any] | None  # the image processor's settings, when readable


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def image_processor_settings(directory: Path) -> dict[str, Any] | None:
    combined = read_json(directory / "processor_config.json") or {}
    nested = combined.get("image_processor")
    if isinstance(nested, dict):
        return nested
    return read_json(directory / "preprocessor_config.json")


def _from_directory(name: str, directory: Path) -> KnownModel:
    return KnownModel(
        name,
        str(directory),
        read_json(directory / "config.json"),
        image_processor_settings(directory),
    )


def _from_hub_cache(name: str) -> KnownModel:
    """An allowed hub id: its configs come from the local Hugging Face cache when present."""
    configs: dict[str, dict[str, Any] | None] = {}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # the API may run without it; the worker checks again
        return KnownModel(name, name, None, None)
    for file in ("config.json", "processor_config.json", "preprocessor_config.json"):
        try:
            cached = try_to_load_from_cache(name, file)
        except ValueError:  # not shaped like a hub id: nothing cached under it
            cached = None
        configs[file] = read_json(Path(cached)) if isinstance(cached, str) else None
    nested = (configs["processor_config.json"] or {}).get("image_processor")
    processor = nested if isinstance(nested, dict) else configs["preprocessor_config.json"]
    return KnownModel(name, name, configs["config.json"], processor)


def _inside_root(name: str, root: Path) -> Path | None:
    """The directory a name stands for under the root, or None when it leads elsewhere."""
    if not name or "\x00" in name or len(name) > MAX_NAME_LENGTH:
        return None
    candidate = (root / name).resolve()
    if candidate == root or not candidate.is_relative_to(root):
        return None
    return candidate


def _has_config(directory: Path) -> bool:
    try:
        return (directory / "config.json").is_file()
    except OSError:  # a name too long for the file system, say: no model of ours
        return False


def _registered_names(session: Session | None) -> set[str]:
    if session is None:
        return set()
    from orchestrator.model_registry import list_models

    return {m.name for m in list_models(session)}


def _registered(name: str, session: Session | None) -> KnownModel | None:
    """A registered model: the worker materialises it from its stored prefix."""
    if session is None:
        return None
    from orchestrator.layout import model_prefix
    from orchestrator.model_registry import find_model

    model = find_model(session, name)
    if model is None:
        return None
    return KnownModel(model.name, model_prefix(model.digest), model.config, model.processor)


def known_names(settings: Settings, session: Session | None = None) -> list[str]:
    """Every name a job may give: the registered models (given a session) first, then the
    server's others (the default, the root's model directories, allowed names), each sorted."""
    names = {settings.default_base_model, *settings.allowed_models}
    root = settings.model_root
    if root is not None and root.is_dir():
        for config in [*root.glob("*/config.json"), *root.glob("*/*/config.json")]:
            name = config.parent.relative_to(root).as_posix()
            if _inside_root(name, root) is not None:  # not a link out of the root
                names.add(name)
    registered = _registered_names(session)
    return sorted(registered) + sorted(names - registered)


def unknown_model(name: str, settings: Settings, session: Session | None = None) -> InvalidRequest:
    names = known_names(settings, session)
    listed = ", ".join(names[:MAX_LISTED]) + (" …" if len(names) > MAX_LISTED else "")
    return InvalidRequest(
        f"unknown base_model '{name[:200]}'; known models: {listed}",
        param="base_model",
        code="unknown_model",
    )


def resolve_base_model(name: str, settings: Settings, session: Session | None = None) -> KnownModel:
    """The model a name stands for; InvalidRequest `unknown_model` for anything else.
    Registered names are looked up first when a session is given."""
    name = name.strip()
    if not name:
        raise InvalidRequest("base_model must not be empty", param="base_model")
    stored = _registered(name, session)
    if stored is not None:
        return stored
    root = settings.model_root
    assert root is not None  # the settings derive it
    directory = _inside_root(name, root)
    if directory is not None:
        registered = directory.relative_to(root).as_posix()
        # The tiny default is known before it is written (`relaytune make-tiny-model`, which
        # `up` and the compose stack run); a worker without it fails the phase saying so.
        tiny_default = registered == TINY_MODEL_NAME == settings.default_base_model
        if tiny_default or _has_config(directory):
            return _from_directory(registered, directory)
    if name in settings.allowed_models or name == settings.default_base_model:
        # The operator's own choices: a hub id in the workers' cache, or a directory anywhere.
        local = Path(name)
        if local.is_absolute() and local.is_dir():
            return _from_directory(name, local)
        return _from_hub_cache(name)
    raise unknown_model(name, settings, session)


def check_fits_model(hp: Hyperparameters, model: KnownModel) -> None:
    """Refuse now what the worker would refuse after queueing: LoRA targets the model lacks,
    and a min_pixels above the processor's cap. A model whose configs cannot be read here is
    checked by the worker."""
    config = model.config or {}
    if config.get("model_type") in QWEN_VL_MODEL_TYPES and isinstance(hp.target_modules, list):
        unknown = sorted(set(hp.target_modules) - set(PROJECTIONS))
        if unknown:
            raise InvalidRequest(
                f"target_modules {unknown} are not linear layers of {model.name}'s language "
                f"model; choose among {', '.join(PROJECTIONS)} or 'all-linear'",
                param="hyperparameters.target_modules",
            )
    if hp.min_pixels is not None:
        upper = hp.max_pixels or _processor_max_pixels(model.processor)
        if upper is not None and hp.min_pixels > upper:
            raise InvalidRequest(
                f"min_pixels ({hp.min_pixels}) exceeds {model.name}'s max_pixels ({upper}); "
                "lower it or raise max_pixels",
                param="hyperparameters.min_pixels",
            )


def _processor_max_pixels(processor: dict[str, Any] | None) -> int | None:
    """The pixel cap the worker applies when the job sets no max_pixels."""
    if not processor:
        return None
    size = processor.get("size") or {}
    longest: Any = size.get("longest_edge", processor.get("max_pixels"))
    try:
        tile = int(processor["patch_size"]) * int(processor["merge_size"])
        return min(int(longest), DEFAULT_MAX_IMAGE_TOKENS * tile * tile)
    except (KeyError, TypeError, ValueError):
        return None
