"""A pretrained BERT-family text encoder (e.g. all-MiniLM-L6-v2) from a local folder.

The encoder is BERT in plain torch (no `transformers`): embeddings (word + position +
token type, LayerNorm), N post-LayerNorm layers of self-attention and a GELU
feed-forward, then mean pooling over the real tokens (sentence-transformers' pooling)
and, as all-MiniLM-L6-v2's pipeline does, L2 normalisation; a trainable Linear projects
the sentence embedding to the model's embed_dim. Submodules carry Hugging Face's
parameter names, so a folder's model.safetensors loads key for key.

The model folder is read only when a training run starts (training/pretrained.py):
the spec gets its architecture and tokenizer, the encoder its weights. After that the
weights live in the checkpoint and the ONNX file like any other (a frozen encoder's
too), so the folder is not needed to resume, evaluate, export or run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fusionedge.spec import SpecError, TextSpec, from_dict
from fusionedge.tokenizer import pad_id
from fusionedge.training.registry import TEXT_ENCODERS

NAME = "hf_bert"
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class BertArchitecture:
    """The shape of a BERT model: the config.json fields that the weights depend on."""

    vocab_size: int
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise SpecError(
                f"architecture: hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise SpecError(
                f"architecture.hidden_act: expected one of {sorted(ACTIVATIONS)}, "
                f"got {self.hidden_act!r}"
            )

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str = "config.json") -> BertArchitecture:
        """From a Hugging Face config.json (other keys are ignored).

        Raises:
            SpecError: the config is not a BERT one this encoder can run.
        """
        if config.get("model_type") != "bert":
            raise SpecError(
                f"{where}: model_type {config.get('model_type')!r}; the {NAME} text encoder "
                "runs BERT-architecture models (model_type 'bert', e.g. all-MiniLM-L6-v2)"
            )
        kind = config.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise SpecError(f"{where}: position_embedding_type {kind!r}; only 'absolute' runs")
        names = {f.name for f in dataclasses.fields(cls)}
        return from_dict(cls, {k: v for k, v in config.items() if k in names}, where)


class BertSelfAttention(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.heads = arch.num_attention_heads
        self.query = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.key = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.value = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.dropout = nn.Dropout(arch.attention_probs_dropout_prob)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # Written out rather than scaled_dot_product_attention: the same ops in eager
        # mode and in the exported graph, and the parity check compares exactly those.
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads) + bias
        out = self.dropout(scores.softmax(dim=-1)) @ v
        return out.transpose(1, 2).reshape(n, length, width)


class BertSublayerOutput(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual): BERT's post-norm residual."""

    def __init__(self, arch: BertArchitecture, width_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, arch.hidden_size)
        self.LayerNorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.dropout = nn.Dropout(arch.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.self = BertSelfAttention(arch)
        self.output = BertSublayerOutput(arch, arch.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.dense = nn.Linear(arch.hidden_size, arch.intermediate_size)
        self.act = ACTIVATIONS[arch.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.attention = BertAttention(arch)
        self.intermediate = BertIntermediate(arch)
        self.output = BertSublayerOutput(arch, arch.intermediate_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class BertEncoderStack(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(arch) for _ in range(arch.num_hidden_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class BertEmbeddings(nn.Module):
    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.position_embeddings = nn.Embedding(arch.max_position_embeddings, arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, arch.hidden_size)
        self.LayerNorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.dropout = nn.Dropout(arch.hidden_dropout_prob)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # One segment: token type 0 everywhere. The length is the spec's fixed
        # max_length, so the position slice is static in the exported graph.
        length = tokens.shape[1]
        x = (
            self.word_embeddings(tokens)
            + self.position_embeddings.weight[:length].unsqueeze(0)
            + self.token_type_embeddings.weight[0]
        )
        return self.dropout(self.LayerNorm(x))


class BertModel(nn.Module):
    """BERT without its pooler: token ids and mask -> last hidden states [N, L, H]."""

    def __init__(self, arch: BertArchitecture) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(arch)
        self.encoder = BertEncoderStack(arch)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(tokens)
        # Additive mask with the dtype's lowest finite value, not -inf (as HF does): a
        # row with no real token (absent text) then softmaxes to uniform, never to NaN.
        low = torch.finfo(x.dtype).min
        bias = torch.where(mask, 0.0, low).to(x.dtype)[:, None, None, :]
        return self.encoder(x, bias)


class PretrainedText(nn.Module):
    """Token ids -> BERT -> pooled sentence embedding (-> L2 norm) -> Linear -> [N, D].

    Attributes:
        source: The folder the weights came from (read only by load_pretrained).
        freeze: The BERT weights stay as loaded: no gradients, and dropout off even in
            training mode, so the frozen encoder computes what it computed pretrained.
    """

    def __init__(
        self,
        spec: TextSpec,
        embed_dim: int,
        arch: BertArchitecture,
        source: str | None,
        freeze: bool,
        pooling: Literal["mean", "cls"],
        normalize: bool,
    ) -> None:
        super().__init__()
        if spec.max_length > arch.max_position_embeddings:
            raise ValueError(
                f"text.max_length {spec.max_length} is longer than the {NAME} encoder's "
                f"max_position_embeddings ({arch.max_position_embeddings})"
            )
        if spec.tokenizer.vocab_size > arch.vocab_size:
            raise ValueError(
                f"the tokenizer has {spec.tokenizer.vocab_size} ids but the {NAME} "
                f"encoder's vocab_size is {arch.vocab_size}"
            )
        self.arch = arch
        self.source = source
        self.freeze = freeze
        self.pooling = pooling
        self.normalize = normalize
        self.pad_id = pad_id(spec.tokenizer)
        self.bert = BertModel(arch)
        self.bert.apply(_init_bert)
        # torch's default init for the projection: BERT's std 0.02 would start it near
        # zero, and a frozen encoder trains nothing else.
        self.proj = nn.Linear(arch.hidden_size, embed_dim)
        if freeze:
            self.bert.requires_grad_(False)

    def train(self, mode: bool = True) -> PretrainedText:
        super().train(mode)
        if self.freeze:
            self.bert.eval()
        return self

    def sentence_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, hidden]: what sentence-transformers' encode() returns for these ids."""
        mask = tokens != self.pad_id
        hidden = self.bert(tokens, mask)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            # clamp as sentence-transformers does: an all-padding row (absent text)
            # pools to zeros instead of 0/0.
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.sentence_embedding(tokens))


def _init_bert(module: nn.Module) -> None:
    """BERT's initialisation (normal 0.02), for an encoder that gets no pretrained weights."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@TEXT_ENCODERS.register(NAME)
def hf_bert_text(
    spec: TextSpec,
    embed_dim: int,
    architecture: dict[str, Any] | None = None,
    path: str | None = None,
    freeze: bool = False,
    pooling: str = "mean",
    normalize: bool = False,
) -> nn.Module:
    """A BERT text encoder; `architecture` is config.json's shape (build_spec fills it in
    from `path`). Without `path`, the same network trains from BERT's random init."""
    if architecture is None:
        raise ValueError(
            f"the {NAME} text encoder needs model.encoder_params.text.path: the folder of "
            "a Hugging Face BERT model (config.json, vocab.txt, model.safetensors)"
        )
    if pooling not in ("mean", "cls"):
        raise ValueError(f"{NAME} pooling: expected 'mean' or 'cls', got {pooling!r}")
    for key, value in (("freeze", freeze), ("normalize", normalize)):
        if not isinstance(value, bool):
            raise ValueError(f"{NAME} {key}: expected true or false, got {value!r}")
    arch = from_dict(BertArchitecture, architecture, "architecture")
    return PretrainedText(spec, embed_dim, arch, path, freeze, pooling, normalize)  # type: ignore[arg-type]
