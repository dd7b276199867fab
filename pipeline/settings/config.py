"""The one typed configuration: ``params.yaml``, loaded and validated, flows to every stage.

Every section is a frozen pydantic model that forbids unknown keys and checks types strictly (a
string is not an int, 1 is not a bool) and ranges. Every number is finite (``.inf`` and ``.nan``
are refused wherever they appear) and within a range a real run could need: each bound says why
no run of the paper's settings, or of clovaai/wsolevaluation's, needs more. A malformed file
raises :class:`ConfigError` naming the file, the dotted key, the value and what is wrong.
``params.yaml`` documents each key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

from pydantic import Field, ValidationError, create_model, model_validator

from pipeline.errors import PipelineError
from pipeline.settings import yaml_io
from pipeline.settings.registry import BACKBONES, METHODS, PAPER_METHOD, BackboneName, MethodName
from pipeline.settings.sections import Epochs, Fraction, LearningRate, PerBackbone, Range, Section, WeightDecay

Dataset = Literal["synth", "cub", "ilsvrc", "openimages", "custom"]
DATASETS: tuple[str, ...] = get_args(Dataset)
SOURCES_FILE = "sources.yaml"  # beside params.yaml: where each dataset is downloaded from (only download reads it)
SPLITS = ("train", "val", "test")  # train-weaksup, train-fullsup, test
PROTOCOL_SPLITS = dict(zip(SPLITS, ("train-weaksup", "train-fullsup", "test"), strict=False))  # the protocol's names (Choe et al.)


S = TypeVar("S", bound=Section)


class ConfigError(PipelineError, ValueError):
    """params.yaml is unreadable or invalid; the message names the file and every bad key."""


# ------------------------------------------------------------------------------------------ ranges

# NumPy's legacy seed range (np.random.seed, and Ray Tune's random_state, take 0 <= seed < 2**32).
Seed = Annotated[int, Field(ge=0, lt=2**32)]
# Thresholds tau are 0, interval, 2 interval, ... < 1: wsolevaluation's default 0.01 gives 100 and
# the paper's settings 0.001 (infra/params/paper-*.yaml) 1000; 1e-4 (10000) is ten times finer
# than any of them; above 0.5 only tau = 0 would be left. Each threshold costs every image a pass.
MIN_CAM_CURVE_INTERVAL, MAX_CAM_CURVE_INTERVAL = 1e-4, 0.5
CamCurveInterval = Annotated[float, Field(ge=MIN_CAM_CURVE_INTERVAL, le=MAX_CAM_CURVE_INTERVAL)]
# Percentile intervals need about 1000 resamples (Efron and Tibshirani, An Introduction to the
# Bootstrap, 1993); 10000 fix their next digit. The evaluator holds (resamples, images) counts.
MAX_BOOTSTRAP_SAMPLES = 10_000
# Images per optimizer step or per scoring batch: the paper's settings train at 32
# (infra/params/paper-*.yaml); 4096 is 128 times that, more than a WSOL recipe uses.
MAX_BATCH = 4096
Batch = Annotated[int, Field(ge=1, le=MAX_BATCH)]
# Generated images per class and split (synth, pretrain): ImageNet has at most 1300 per class.
ImagesPerClass = Annotated[int, Field(ge=1, le=5000)]
# Image sides in px: the paper's settings resize to 256 and crop 224 (infra/params/paper-*.yaml);
# 1024 is four times that side, 16 times the pixels.
Side = Annotated[int, Field(ge=16, le=1024)]
# A count of steps (between log lines, between measurements): ILSVRC's 10 epochs at batch 32 are
# 400000 steps.
Steps = Annotated[int, Field(ge=1, le=10**6)]


def _non_finite(data: object, loc: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """(key path, value) of each infinite or NaN number anywhere in parsed YAML."""
    if isinstance(data, float) and not math.isfinite(data):
        yield loc, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _non_finite(value, (*loc, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _non_finite(value, (*loc, index))


# ---------------------------------------------------------------------------------------- datasets

URL_SCHEMES = ("https", "http")  # downloads: no file://, ftp://, data: (README, "Security")


def plain_filename(name: str) -> bool:
    """A name that stays in the folder it is joined to: no separator, no '..', not hidden, printable."""
    return (name not in ("", ".", "..") and not name.startswith(".") and "/" not in name and "\\" not in name
            and name.isprintable())


class Source(Section):
    """One downloadable file: mirrors tried in order, and its checksum ``"sha256:<hex>"`` or
    ``"md5:<hex>"``; ``null`` when none is published (the sum of the first download is recorded
    beside the file and checked from then on)."""

    urls: list[str] = Field(min_length=1)
    checksum: Annotated[str, Field(pattern=r"^(sha256:[0-9a-f]{64}|md5:[0-9a-f]{32})$")] | None
    filename: str = Field(min_length=1)

    @model_validator(mode="after")
    def _safe(self):
        for index, url in enumerate(self.urls):
            scheme, _, rest = url.partition("://")
            if scheme.lower() not in URL_SCHEMES or not rest or rest.startswith("/"):
                raise ValueError(f"urls.{index}: {url!r} is not an http(s) URL with a host "
                                 f"(only {' and '.join(URL_SCHEMES)} are fetched)")
        if not plain_filename(self.filename):
            raise ValueError(f"filename: {self.filename!r} must be a plain file name (no folder, no '..', "
                             f"no leading dot)")
        return self


class MetadataSources(Section):
    """The four metadata files of one split, in the clovaai/wsolevaluation format."""

    image_ids: Source
    class_labels: Source
    image_sizes: Source
    localization: Source


class SplitSizes(Section):
    train: ImagesPerClass
    val: ImagesPerClass
    test: ImagesPerClass


class SynthConfig(Section):
    """The built-in synthetic dataset (see pipeline/data/synth.py)."""

    classes: Annotated[int, Field(ge=2, le=8)]
    images_per_class: SplitSizes
    image_size: Annotated[int, Field(ge=32, le=512)]
    context_bias: Fraction  # probability that the background has the class's typical texture
    distractors: Annotated[int, Field(ge=0, le=8)]  # at most this many distractor shapes per image
    seed: Seed


class CubConfig(Section):
    images: Source  # CUB_200_2011.tgz: train-weaksup and test
    fullsup_images: Source  # CUBV2 (5 Flickr images per class): train-fullsup
    fullsup_metadata: MetadataSources


class IlsvrcConfig(Section):
    root: str | None  # local ImageNet-1k copy: train/<wnid>/*.JPEG and val/*.JPEG
    val_annotations: str | None  # local folder of the official val box XMLs (ILSVRC2012_bbox_val_v3)
    fullsup_images: Source  # ImageNetV2 threshold-0.7: train-fullsup
    fullsup_metadata: MetadataSources


class OpenImagesConfig(Section):
    images: Source
    masks: Source
    metadata: dict[Literal["train", "val", "test"], MetadataSources]


class CustomConfig(Section):
    root: str | None  # a folder with metadata/{train,val,test}/ and the images the ids name


class DatasetsConfig(Section):
    synth: SynthConfig
    cub: CubConfig
    ilsvrc: IlsvrcConfig
    openimages: OpenImagesConfig
    custom: CustomConfig


def _crop_within(section: S, side: str) -> S:
    """A section whose random crops (``crop``) must fit in its images' side (the field ``side``)."""
    crop = getattr(section, "crop")  # noqa: B009 (every such section has one)
    if crop > getattr(section, side):
        raise ValueError(f"crop ({crop}) must not exceed {side} ({getattr(section, side)})")
    return section


class DataConfig(Section):
    """Loading. Train: resize to resize x resize, random crop, flip; test: resize to crop x crop."""

    resize: Side
    crop: Side
    # DataLoader processes per training worker; 0: in the training process. The paper's settings
    # use 8 (infra/params/paper-*.yaml); 64 is more cores than a node gives one worker.
    loader_workers: Annotated[int, Field(ge=0, le=64)]
    # batches each loader process keeps ready (DataLoader's prefetch_factor; PyTorch's default 2, the paper's settings 4)
    prefetch_batches: Annotated[int, Field(ge=1, le=64)]
    pin_memory: bool
    prepared: bool  # the prepare stage stores train and val as uint8 arrays (false: decode the files every epoch)

    @model_validator(mode="after")
    def _crop_fits(self):
        return _crop_within(self, "resize")


# ------------------------------------------------------------------------------------------ models

PRETRAIN_STAGE = "pretrain"  # backbone_settings.<b>.pretrained: the pretrain stage's weights


class ModelConfig(Section):
    """Per-backbone settings (the protocol's defaults differ by backbone)."""

    large_feature_map: bool  # 28x28 final map at 224 px instead of 14x14
    # None: random init; "pretrain": the pretrain stage's weights; a torchvision weights name; or a .pth file path
    pretrained: str | None
    lr: LearningRate
    weight_decay: WeightDecay
    epochs: Epochs
    lr_decay_epochs: Epochs  # step decay every this many epochs
    batch_size: Batch  # per optimizer step, across all workers


# One section per registered method, its settings class from the registry.
if TYPE_CHECKING:  # a type checker sees a section; pydantic builds one field per registered method
    MethodsConfig = Section
else:
    MethodsConfig = create_model("MethodsConfig", __base__=Section,
                                 **{name: (entry.settings, ...) for name, entry in METHODS.items()})


# ---------------------------------------------------------------------------------------- training

class PretrainConfig(Section):
    """The pretrain stage (pipeline/train/pretrain.py): a plain classifier of generated body shapes,
    never a benchmark class, for backbones whose ``pretrained`` is ``pretrain``."""

    images_per_class: ImagesPerClass
    image_size: Annotated[int, Field(ge=32, le=512)]  # px, square
    crop: Annotated[int, Field(ge=32, le=512)]  # px, random crops of this side
    context_bias: Fraction
    distractors: Annotated[int, Field(ge=0, le=8)]
    epochs: Epochs
    lr: LearningRate  # AdamW, peak of a one-cycle schedule
    weight_decay: WeightDecay  # AdamW's decoupled decay
    batch_size: Batch
    seed: Seed

    @model_validator(mode="after")
    def _crop_fits(self):
        return _crop_within(self, "image_size")


class FewShotConfig(Section):
    """The few-shot row (pipeline/train/few_shot.py): the backbone with a per-pixel foreground head,
    trained on train-fullsup's masks (or filled boxes) only (Choe et al., TPAMI 2022)."""

    epochs: Epochs
    lr: LearningRate  # AdamW, peak of a one-cycle schedule, for the backbone and the head alike
    weight_decay: WeightDecay
    batch_size: Batch
    seed: Seed


class TrainConfig(Section):
    """The recipe shared by every run (Sec. 4.1 of the paper; per-backbone values in ``models``)."""

    lr_classifier_ratio: Annotated[float, Field(gt=0, le=100)]  # new layers train at lr * this (wsolevaluation: 10)
    lr_decay_factor: Annotated[float, Field(gt=0, le=1)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    nesterov: bool
    grad_clip: Annotated[float, Field(ge=0, le=10**4)]  # max gradient L2 norm; 0: off (here 5; a norm of 1e4 has diverged)
    # steps between measurements of each loss term's gradient norm; 0: never
    grad_terms_every: Annotated[int, Field(ge=0, le=10**6)]
    amp: Literal["none", "bf16", "fp16"]  # mixed precision, GPU only
    channels_last: bool  # GPU only
    select: Literal["last", "best"]  # final model: last epoch, or best val MaxBoxAccV2
    val_cam_curve_interval: CamCurveInterval  # thresholds of the per-epoch val MaxBoxAccV2
    log_every: Steps  # steps between progress lines
    gallery_images: Annotated[int, Field(ge=0, le=64)]  # val CAMs drawn into MLflow at the end


class RayConfig(Section):
    num_workers: Annotated[int, Field(ge=1, le=1024)]  # the paper's ILSVRC setting: 8 GPUs
    use_gpu: bool
    cpus_per_worker: Annotated[int, Field(ge=1, le=256)]  # the paper's settings: 8; 256: a whole large node
    max_failures: Annotated[int, Field(ge=0, le=100)]  # a run failing 100 times has a fault no restart mends
    keep_checkpoints: Annotated[int, Field(ge=1, le=100)]  # each holds the model and optimizer state
    system_metrics_interval: Annotated[float, Field(ge=0, le=3600)]  # s between samples of CPU/memory/GPU use; 0: none


class ClusterConfig(Section):
    """Where training runs. No stage lists it in its DVC params and no run's identity includes it, so
    moving to a cluster makes nothing stale; $RAY_ADDRESS and $WSOL_RAY_STORAGE override it."""

    address: str | None  # a Ray cluster to join; null: a local Ray
    storage_path: str | None  # checkpoints: a shared filesystem or cloud URI for multi-node; null: ray_results/


class EvaluateConfig(Section):
    cam_curve_interval: CamCurveInterval
    iou_thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(min_length=1)
    batch_size: Batch
    # resamples of the test images behind every 95 % interval
    bootstrap_samples: Annotated[int, Field(ge=1, le=MAX_BOOTSTRAP_SAMPLES)]
    bootstrap_seed: Seed

    @model_validator(mode="after")
    def _has_fifty(self):
        if 50 not in self.iou_thresholds:  # GT_KNOWN_IOU (metrics/conventions.py, which this torch-free module does not import)
            raise ValueError("iou_thresholds must contain 50 (GT-known and top-1 loc use IoU 0.5)")
        return self


class ExportConfig(Section):
    # max |exported - eager| / max(1, max |eager|) over logits and CAMs: relative, so 1 already
    # accepts an export that is wrong by the outputs' whole scale
    tolerance: Annotated[float, Field(gt=0, le=1)]


class ReportConfig(Section):
    gallery_images: Annotated[int, Field(ge=1, le=32)]


class TuneConfig(Section):
    """The protocol's search on train-fullsup: how trials run and the optimiser's ranges, shared by the
    DAG's ``search@<backbone>-<method>`` stages (``method_settings.<method>.search.trials`` each) and
    ``wsol tune`` (one backbone and method, ``num_samples`` trials). Every trial sets the method's
    optimiser override on its backbone (``method_settings.<method>.optimiser.<backbone>``)."""

    backbone: BackboneName  # wsol tune's
    method: MethodName  # wsol tune's
    num_samples: Annotated[int, Field(ge=1, le=10_000)]  # wsol tune's trials; each is a training run
    max_concurrent: Annotated[int, Field(ge=1, le=1024)]  # trials at once (ray.num_workers' bound)
    grace_period: Epochs  # epochs before ASHA may stop a trial
    seed: Seed  # the draws' and every trial's training seed
    lr: Range
    weight_decay: Range
    lr_decay_epochs: Range  # whole epochs

    @model_validator(mode="after")
    def _whole_epochs(self):
        if not self.lr_decay_epochs.integer or self.lr_decay_epochs.low < 1:
            raise ValueError("lr_decay_epochs: expected whole epochs (integer: true, low >= 1)")
        return self


class Config(Section):
    dataset: Dataset
    backbones: list[BackboneName] = Field(min_length=1)
    methods: list[MethodName] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)  # every backbone x method is trained once per seed
    datasets: DatasetsConfig
    data: DataConfig
    backbone_settings: PerBackbone[ModelConfig]
    method_settings: MethodsConfig
    pretrain: PretrainConfig
    few_shot: FewShotConfig
    train: TrainConfig
    ray: RayConfig
    cluster: ClusterConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    report: ReportConfig
    tune: TuneConfig

    @model_validator(mode="after")
    def _consistent(self):
        """Faults across sections, all in one error: Table 2 switches, taps, momentum, repeated names."""
        faults = []
        for method, spec in METHODS.items():
            settings = getattr(self.method_settings, method)
            for key, value in (spec.variant_of_icl or {}).items():
                if _dotted(settings, key) != value:
                    faults.append(f"method_settings.{method}.{key} must be {json.dumps(value)}: {method} is the "
                                  f"paper's method with that change (Table 2's row {spec.display!r})")
            taps = getattr(settings, "taps", None)
            for backbone, listed in (taps.root.items() if taps is not None else ()):
                valid = BACKBONES[backbone].taps[spec.architecture]
                unknown = [tap for tap in listed if tap not in valid]
                if unknown:
                    faults.append(f"method_settings.{method}.taps.{backbone}: {backbone} has no tap "
                                  f"{', '.join(map(repr, unknown))}; valid taps: {', '.join(valid)}")
                elif len(set(listed)) != len(listed):
                    faults.append(f"method_settings.{method}.taps.{backbone}: a tap is listed twice: {listed}")
        faults.extend(self._per_backbone_faults())
        faults.extend(self._override_faults())
        faults.extend(self._search_faults())
        if self.train.nesterov and self.train.momentum == 0:
            faults.append("train.nesterov needs train.momentum > 0")
        for key in ("backbones", "methods", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                faults.append(f"{key} lists a name twice: {values}")
        if faults:
            raise ValueError("\n  ".join(faults))
        return self


    def _search_faults(self) -> Iterator[str]:
        """A search range for a setting the method does not declare searchable, or a ``below`` that
        names no other setting of its space."""
        for method, spec in METHODS.items():
            ranges = getattr(self.method_settings, method).search.space
            for key, dimension in ranges.items():
                where = f"method_settings.{method}.search.space.{key}"
                if key not in spec.tunable:
                    yield (f"{where}: {method} has no searchable setting {key!r} "
                           f"(it has: {', '.join(spec.tunable) or 'none besides the optimiser'})")
                if dimension.below is not None and (dimension.below == key or dimension.below not in ranges):
                    yield f"{where}.below: {dimension.below!r} is not another setting of its space"

    def _override_faults(self) -> Iterator[str]:
        """An optimiser override that no run of this configuration reads: for a backbone not in
        ``backbones``, or a method not in ``methods`` (a Table 2 row of the paper's method may carry
        the paper's method's own, inherited through params.yaml's ``<<: *icl``)."""
        paper = getattr(self.method_settings, PAPER_METHOD).optimiser
        for method, spec in METHODS.items():
            overrides = getattr(self.method_settings, method).optimiser
            if overrides and method not in self.methods and not (spec.variant_of_icl is not None and overrides == paper):
                yield (f"method_settings.{method}.optimiser: {method} is not run (methods: {', '.join(self.methods)}); "
                       "remove its override")
            for backbone in overrides:
                if backbone not in self.backbones:
                    yield (f"method_settings.{method}.optimiser.{backbone}: {backbone} is not run "
                           f"(backbones: {', '.join(self.backbones)}); remove its override")

    def optimiser(self, backbone: str, method: str) -> Optimiser:
        """The optimiser a run of ``backbone`` x ``method`` trains with: the backbone's settings, each
        value the method's override gives replacing the backbone's, and where they come from."""
        settings = self.backbone_settings.of(backbone)
        override = getattr(self.method_settings, method).optimiser.get(backbone)
        if override is None:
            return Optimiser(settings.lr, settings.weight_decay, settings.lr_decay_epochs,
                             f"backbone_settings.{backbone}")
        def pick(key: str):
            value = getattr(override, key)
            return getattr(settings, key) if value is None else value
        return Optimiser(pick("lr"), pick("weight_decay"), pick("lr_decay_epochs"), override.source)

    def _per_backbone_faults(self) -> Iterator[str]:
        """Per-backbone values for a backbone not registered, or missing for one this configuration
        trains or tunes: only those must be given, so a registered backbone needs no values where it
        is not used."""
        maps = {"backbone_settings": self.backbone_settings}
        for method in METHODS:
            settings = getattr(self.method_settings, method)
            maps.update({f"method_settings.{method}.{name}": getattr(settings, name) for name in type(settings).model_fields
                         if isinstance(getattr(settings, name), PerBackbone)})
        for key, mapping in maps.items():
            for backbone in mapping.root:
                if backbone not in BACKBONES:
                    yield f"{key}.{backbone}: not a registered backbone ({', '.join(BACKBONES)})"
        pairs = {(backbone, method) for backbone in self.backbones for method in self.methods}
        pairs.add((self.tune.backbone, self.tune.method))
        for backbone in sorted({backbone for backbone, _ in pairs}):
            if backbone not in self.backbone_settings.root:
                yield f"backbone_settings.{backbone}: missing ({backbone} is trained or tuned)"
        for backbone, method in sorted(pairs):
            settings = getattr(self.method_settings, method)
            for name in type(settings).model_fields:
                value = getattr(settings, name)
                if isinstance(value, PerBackbone) and backbone not in value.root:
                    yield f"method_settings.{method}.{name}.{backbone}: missing ({backbone} x {method} is trained or tuned)"

    def run(self, backbone: str, method: str) -> RunSettings:
        """What a run of ``backbone`` x ``method`` reads (:class:`RunSettings`)."""
        return RunSettings(self.data, self.train, self.backbone_settings.of(backbone),
                           getattr(self.method_settings, method).only_backbone(backbone))


@dataclass(frozen=True)
class Optimiser:
    """A run's SGD settings (:meth:`Config.optimiser`): lr of the pretrained layers (the new ones at lr x
    ``train.lr_classifier_ratio``), weight decay, the step decay's period in epochs, and their source."""

    lr: float
    weight_decay: float
    lr_decay_epochs: int
    source: str  # "backbone_settings.<backbone>", or the override's source


@dataclass(frozen=True)
class RunSettings:
    """All that one run reads and that rebuilding its network needs: the data and training recipes,
    its backbone's section and its method's, per-backbone values reduced to its backbone. A run
    folder stores these, never the whole :class:`Config` (pipeline/formats/run_folder.py), so backbones and
    methods added later leave it readable."""

    data: DataConfig
    train: TrainConfig
    model: ModelConfig  # backbone_settings.<backbone>
    method: Section  # method_settings.<method>, its per-backbone values for this backbone only

    def as_json(self) -> dict:
        return {"data": self.data.model_dump(mode="json"), "train": self.train.model_dump(mode="json"),
                "backbone": self.model.model_dump(mode="json"), "method": self.method.model_dump(mode="json")}

    @classmethod
    def from_json(cls, data: object, method: str, source: str) -> RunSettings:
        """The inverse of :meth:`as_json` for a run of ``method``; a ValueError naming ``source`` and
        each bad key (every number finite, every section strict, as params)."""
        if not isinstance(data, dict) or set(data) != {"data", "train", "backbone", "method"}:
            raise ValueError(f"{source}: expected an object with keys backbone, data, method, train")
        sections: dict[str, type[Section]] = {"data": DataConfig, "train": TrainConfig, "backbone": ModelConfig,
                                              "method": METHODS[method].settings}
        fields: dict = {key: (kind, ...) for key, kind in sections.items()}
        lines = _problems(data, create_model("RunSections", __base__=Section, **fields))
        if lines:
            raise ValueError(f"{source}: " + "; ".join(line.strip() for line in lines))
        return cls(DataConfig.model_validate(data["data"]), TrainConfig.model_validate(data["train"]),
                   ModelConfig.model_validate(data["backbone"]), sections["method"].model_validate(data["method"]))


def _dotted(section: Section, key: str) -> object:
    """The value at a dotted key of a section ("ablation.contrastive")."""
    for part in key.split("."):
        section = getattr(section, part)
    return section


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _problems(data: object, model: type[Section]) -> list[str]:
    """One line per bad key of ``data`` as a ``model``: first each number that is not finite,
    wherever it is, then what validation finds."""
    non_finite = {_location(loc): value for loc, value in _non_finite(data)}
    lines = [f"  {key}: must be a finite number (got {value!r})" for key, value in non_finite.items()]
    try:
        model.model_validate(data)
    except ValidationError as error:
        for problem in error.errors():
            if _location(problem["loc"]) in non_finite:
                continue  # named above
            shown = problem["type"] != "missing" and not isinstance(problem["input"], (dict, list))  # not a whole section
            value = f" (got {problem['input']!r})" if shown else ""
            lines.append(f"  {_location(problem['loc'])}: {problem['msg']}{value}")
    return lines


def validate(data: object, source: str = "params.yaml") -> Config:
    """A :class:`Config` from parsed YAML, or :class:`ConfigError` listing every bad key: first each
    number that is not finite, wherever it is (every section's, every method's settings)."""
    lines = _problems(data, Config)
    if lines:
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(lines))
    return Config.model_validate(data)


def dotted_steps(dotted: str) -> list[str | int]:
    """A dotted params key's steps; a number indexes a list (``method_settings.spg.thresholds.0.1``)."""
    return [int(part) if part.isdigit() else part for part in dotted.split(".")]


def with_values(config: Config, values: Mapping[str, object], source: str) -> Config:
    """The config with dotted keys set (a missing mapping on the way is made: a method's optimiser
    override for a backbone it had none for), validated again; errors name ``source``."""
    data: Any = config.model_dump(mode="json")
    for dotted, value in values.items():
        *parents, last = dotted_steps(dotted)
        node = data
        for step in parents:
            node = node.setdefault(step, {}) if isinstance(node, dict) else node[step]
        node[last] = value
    return validate(data, source)


def with_sources(data: object, sources: object, source: str) -> object:
    """params with each dataset's download sources (sources.yaml: ``{<dataset>: {<source>: ...}}``)
    under ``datasets.<dataset>``; a source that params itself gives wins (``dvc exp run -S
    datasets.cub.images.urls=...``)."""
    if not isinstance(sources, dict) or not all(isinstance(v, dict) for v in sources.values()):
        raise ConfigError(f"{source}: expected a mapping of dataset name -> its sources")
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        return data  # validation names what is missing
    datasets = dict(data["datasets"])
    for name, given in sources.items():
        if not isinstance(datasets.get(name, {}), dict):
            continue
        datasets[name] = {**given, **datasets.get(name, {})}
    return {**data, "datasets": datasets}


def _read(path: Path) -> object:
    try:
        return yaml_io.read(path)
    except yaml_io.YamlError as error:
        raise ConfigError(str(error)) from None


def validate_params(data: object, path: Path, source: str | None = None) -> Config:
    """Validate the parsed contents of the params file at ``path`` (errors name ``source``, default
    the file), with the download sources of the ``SOURCES_FILE`` beside it when there is one."""
    sources = path.with_name(SOURCES_FILE)
    if sources.is_file():
        data = with_sources(data, _read(sources), str(sources))
    return validate(data, source or str(path))


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read (YAML 1.2, as DVC reads it) and validate a params file (``validate_params``)."""
    path = Path(path)
    return validate_params(_read(path), path)
