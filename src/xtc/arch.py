"""Where each supported architecture keeps its parts: one table, ``ARCHITECTURES``, keyed by the
``model_type`` of the Hugging Face config. Layer reduction, quantization, export and size look
module names up here instead of branching on the type. A leaf: it imports nothing of xtc but errors.
"""

from dataclasses import dataclass

from xtc.errors import XtcError


@dataclass(frozen=True)
class Architecture:
    base: str  # attribute of the *ForSequenceClassification model holding the encoder
    layers: str  # ModuleList of transformer layers, relative to the task model
    num_layers_key: str  # config field with the layer count
    embeddings: str
    word_embeddings: str
    position_embeddings: str
    # Linear layers inside one transformer layer, by role (relative to the layer).
    query: str
    key: str
    value: str
    attention_output: str
    ffn_in: str
    ffn_out: str
    # Modules kept in full precision on top of the encoder.
    head: tuple[str, ...]
    # The hidden x hidden Linear between the encoder's [CLS] output and the classifier (BERT's pooler),
    # its activation, and the Linear that makes the logits
    pooler: str
    pooler_activation: str
    classifier: str
    # What the torch-free engine (engine.py) reads besides the above: the LayerNorms (relative to a layer
    # for the two inside one), the token-type table (None: the model has none), ELECTRA's projection of
    # narrower embeddings to the hidden size (None: none), the config's keys of the geometry, and whether
    # positions count from the padding id on (RoBERTa: padding_idx + 1 + index among the unpadded tokens)
    embeddings_norm: str
    token_type_embeddings: str | None
    attention_norm: str = "attention.output.LayerNorm"
    output_norm: str = "output.LayerNorm"
    embeddings_project: str | None = None
    hidden_key: str = "hidden_size"
    intermediate_key: str = "intermediate_size"
    heads_key: str = "num_attention_heads"
    activation_key: str = "hidden_act"
    positions_after_padding: bool = False


def _bert_like(base: str, head: tuple[str, ...], pooler: str, pooler_activation: str, classifier: str,
               **engine) -> Architecture:
    return Architecture(
        base=base,
        layers=f"{base}.encoder.layer",
        num_layers_key="num_hidden_layers",
        embeddings=f"{base}.embeddings",
        word_embeddings=f"{base}.embeddings.word_embeddings",
        position_embeddings=f"{base}.embeddings.position_embeddings",
        embeddings_norm=f"{base}.embeddings.LayerNorm",
        token_type_embeddings=f"{base}.embeddings.token_type_embeddings",
        query="attention.self.query",
        key="attention.self.key",
        value="attention.self.value",
        attention_output="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        head=head,
        pooler=pooler,
        pooler_activation=pooler_activation,
        classifier=classifier,
        **engine,
    )


ARCHITECTURES: dict[str, Architecture] = {
    # MiniLM checkpoints (all-MiniLM-L6-v2, paraphrase-MiniLM-L3) are model_type "bert".
    "bert": _bert_like("bert", ("bert.pooler", "classifier"), "bert.pooler.dense", "tanh", "classifier"),
    "roberta": _bert_like("roberta", ("classifier",), "classifier.dense", "tanh", "classifier.out_proj",
                          positions_after_padding=True),
    "xlm-roberta": _bert_like("roberta", ("classifier",), "classifier.dense", "tanh", "classifier.out_proj",
                              positions_after_padding=True),
    # ELECTRA's head applies GELU where BERT's pooler has tanh (transformers' ElectraClassificationHead)
    "electra": _bert_like("electra", ("classifier",), "classifier.dense", "gelu", "classifier.out_proj",
                          embeddings_project="electra.embeddings_project"),
    "distilbert": Architecture(
        base="distilbert",
        layers="distilbert.transformer.layer",
        num_layers_key="n_layers",
        embeddings="distilbert.embeddings",
        word_embeddings="distilbert.embeddings.word_embeddings",
        position_embeddings="distilbert.embeddings.position_embeddings",
        embeddings_norm="distilbert.embeddings.LayerNorm",
        token_type_embeddings=None,
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attention_output="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        head=("pre_classifier", "classifier"),
        pooler="pre_classifier",
        pooler_activation="relu",
        classifier="classifier",
        attention_norm="sa_layer_norm",
        output_norm="output_layer_norm",
        hidden_key="dim",
        intermediate_key="hidden_dim",
        heads_key="n_heads",
        activation_key="activation",
    ),
}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise XtcError(
            f"model type {model_type!r} is not a supported encoder; supported: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[model_type]
