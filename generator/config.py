"""The composite R2GenKG model config: one dataclass per part, coupled sizes derived in one place.

``ModelConfig.derive(vision_dim, text_dim, vision_tokens)`` fills the sizes that depend on another
part (the Q-Former's encoder width = the Swin output width, its tokens per view, the
cross-attention input widths, the number of graph scales of the KG mode); the model calls it once,
and the derived config is what a checkpoint stores.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from cxr.datasets import DataConfig
from encoders.fusion import CrossAttentionConfig
from encoders.graph import GraphConfig, MultiScaleConfig
from encoders.qformer import QFormerConfig
from encoders.vision import VisionConfig
from generator.llm import LLMConfig
from generator.settings import GenerationSettings
from graphdb.schema import SubgraphSpec
from retrieval.index import IndexKind

PAPER_PROMPT = "Generate a comprehensive and detailed diagnosis report for this chest xray image."


class KGMode(str, Enum):
    NONE = "none"            # ablation: no knowledge graph
    GLOBAL = "global"        # the paper: one global multi-scale subgraph for every study
    PER_STUDY = "per_study"  # ours: nested subgraphs seeded by the study's (predicted) observations


class KG2VQueries(str, Enum):
    SCALES = "scales"   # the S fused scale tokens query the image: S prompt tokens
    NODES = "nodes"     # every node of the largest scale queries the image: M prompt tokens


@dataclass
class KGConfig:
    """The knowledge part of the architecture. Where the graph lives is not here: that is the
    deployment's ``graphdb.store.StoreConfig``, passed when a model is built."""

    mode: KGMode = KGMode.PER_STUDY
    level_budgets: tuple[int, int, int] = (16, 48, 96)
    global_scales: tuple[int, ...] = (101, 206, 319, 400, 558)
    teacher_forcing_epochs: int = 1   # per_study: seed from the report's labels for the first N epochs;
                                      # after that the seeds are the positive decisions (generator.decisions)
    graph: GraphConfig = field(default_factory=GraphConfig)
    fusion_layers: int = 1            # multi-scale Transformer layers
    fusion_heads: int = 4
    kg2v_queries: KG2VQueries = KG2VQueries.SCALES

    def __post_init__(self) -> None:
        self.mode = KGMode(self.mode)
        self.kg2v_queries = KG2VQueries(self.kg2v_queries)
        self.level_budgets, self.global_scales = tuple(self.level_budgets), tuple(self.global_scales)
        SubgraphSpec(self.level_budgets, self.global_scales)  # validates both
        if self.teacher_forcing_epochs < 0:
            raise ValueError(f"KGConfig.teacher_forcing_epochs must be ≥ 0, got {self.teacher_forcing_epochs}")

    @property
    def spec(self) -> SubgraphSpec:
        return SubgraphSpec(self.level_budgets, self.global_scales)

    @property
    def num_scales(self) -> int:
        return len(self.global_scales) if self.mode == KGMode.GLOBAL else len(self.level_budgets)

    def multiscale(self) -> MultiScaleConfig:
        return MultiScaleConfig(graph=self.graph, num_scales=self.num_scales, layers=self.fusion_layers,
                                heads=self.fusion_heads, dropout=self.graph.dropout)


@dataclass
class DiseaseTokenConfig:
    enabled: bool = True          # ablation switch: off = no retrieval and no disease tokens in the prompt
    top_k: int = 8                # bank tokens each disease token attends to
    per_image: int = 6            # mining caps (the paper: ≤ 6 per image, ≤ 500 per disease)
    per_disease: int = 500
    index: IndexKind = IndexKind.FLAT
    heads: int = 4

    def __post_init__(self) -> None:
        self.index = IndexKind(self.index)
        for name in ("top_k", "per_image", "per_disease", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiseaseTokenConfig.{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    kg: KGConfig = field(default_factory=KGConfig)
    disease_tokens: DiseaseTokenConfig = field(default_factory=DiseaseTokenConfig)
    cross_attention: bool = True     # ablation switch: V2KG and KG2V tokens in the prompt
    fusion: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: str = PAPER_PROMPT
    diagnosis_prompt: bool = False   # the decided state of each observation, as text, in the prompt
    classifier_weight: float = 1.0   # loss = LM loss + classifier_weight · BCE(14 observations)
    max_report_tokens: int = 60      # the paper's max report length (IU X-ray)

    def __post_init__(self) -> None:
        if self.classifier_weight < 0:
            raise ValueError(f"ModelConfig.classifier_weight must be ≥ 0, got {self.classifier_weight}")
        if self.max_report_tokens < 1:
            raise ValueError(f"ModelConfig.max_report_tokens must be ≥ 1, got {self.max_report_tokens}")
        if self.kg.mode == KGMode.NONE and self.cross_attention:
            # cross-attention needs a graph: say so rather than silently dropping it
            raise ValueError("ModelConfig.cross_attention must be false when kg.mode is 'none'")

    def derive(self, vision_dim: int, text_dim: int, vision_tokens: int = 0) -> ModelConfig:
        """Fill the sizes one part takes from another; returns a new config."""
        graph = replace(self.kg.graph, text_dim=text_dim)
        return replace(
            self,
            qformer=replace(self.qformer, encoder_hidden_size=vision_dim,
                            encoder_tokens=vision_tokens or self.qformer.encoder_tokens),
            kg=replace(self.kg, graph=graph),
            fusion=replace(self.fusion, vision_dim=vision_dim, graph_dim=graph.out_dim))


@dataclass
class RunConfig:
    """What a checkpoint says about the run that made it and how to use it: the data it was
    trained on (image size, views, cleaning), the architecture and the default decoding.
    training.config.ExperimentConfig adds the training settings."""

    name: str = "r2genkg"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        if self.generation.max_new_tokens < self.model.max_report_tokens:
            raise ValueError(f"{type(self).__name__}.generation.max_new_tokens ({self.generation.max_new_tokens}) "
                             f"must be ≥ model.max_report_tokens ({self.model.max_report_tokens})")
