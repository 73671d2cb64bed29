"""Write a bundle as a Triton Inference Server model repository.

Always ``REPO/<name>/``: a Python-backend model (:mod:`svdh_runtime.triton_models`)
that takes radiograph file bytes and answers as ``svdh-run`` does; its version
directory holds ``model.py`` and a checksum-verified copy of the bundle.

With an ensemble platform (GPU sites), also ``<name>_prepare`` and
``<name>_finish`` (Python), ``<name>_graph`` (``onnxruntime_onnx`` with
``model.onnx``, or ``tensorrt_plan`` with a checksum-verified engine from
``BUNDLE/engines/`` and its sidecar as ``svdh_engine.json``) and
``<name>_ensemble``, which chains them and answers like ``<name>``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from svdh_runtime.backends.base import GATE_OUTPUT, JOINT_OUTPUTS, OUTPUT_NAMES
from svdh_runtime.bundle import MODEL_FILE, Bundle, load_bundle, sha256_file
from svdh_runtime.engines import ENGINES_DIR, EngineSidecar, read_sidecars, read_verified_plan
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import DEFAULT_INTERVAL_LEVEL, MANIFEST_NAME, Manifest, check_level
from svdh_runtime.triton_models import BUNDLE_DIR, CONTEXT, INPUT

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
INSTANCE_KINDS = ("cpu", "gpu")
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
BACKENDS = ("auto", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings written to the models' config.pbtxt."""

    name: str = "svdh"
    version: int = 1
    max_batch_size: int = 8
    instances: int = 1  # of each model
    kind: str = "cpu"  # the graph step's instances: cpu or gpu (the Python models run on CPU instances)
    max_queue_delay_us: int = 100
    ensemble: str | None = None  # the graph step's platform (onnxruntime_onnx, tensorrt_plan); None: no ensemble
    engine: str | None = None  # tensorrt_plan: the plan's file name in BUNDLE/engines/ (default: the only one)
    backend: str = "auto"  # the Python model's backend, chosen as svdh-run --backend does
    interval_level: float = DEFAULT_INTERVAL_LEVEL

    def __post_init__(self) -> None:
        if self.ensemble is not None and self.ensemble not in PLATFORMS:
            raise BundleError(f"the ensemble's platform must be one of {', '.join(PLATFORMS)}")
        if self.ensemble == "tensorrt_plan" and self.kind != "gpu":
            raise BundleError("a tensorrt_plan model runs on GPU instances only (--kind gpu)")
        if self.backend not in BACKENDS:
            raise BundleError(f"backend must be one of {', '.join(BACKENDS)}")
        try:
            check_level(self.interval_level)
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        if not _NAME.match(self.name):
            raise BundleError(f"Triton model name {self.name!r} may only hold letters, digits, '.', '_' and '-'")
        if self.version < 1 or self.max_batch_size < 1 or self.instances < 1 or self.max_queue_delay_us < 0:
            raise BundleError("version, max batch size and instances must be >= 1, queue delay >= 0")
        if self.kind not in INSTANCE_KINDS:
            raise BundleError(f"instance kind must be one of {', '.join(INSTANCE_KINDS)}")

    def model(self, step: str) -> str:
        """The model name of ``step``: "" (the Python model), "prepare", "graph", "finish" or "ensemble"."""
        return f"{self.name}_{step}" if step else self.name


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model configuration."""

    name: str
    dims: tuple[int, ...]
    data_type: str = "TYPE_FP32"
    scalar: bool = False  # [1] outside, [] inside the model (a graph's score[N], ood_distance[N])

    def pbtxt(self) -> str:
        reshape = "\n    reshape: { shape: [ ] }" if self.scalar else ""
        dims = ", ".join(str(d) for d in self.dims)
        return f'  {{\n    name: "{self.name}"\n    data_type: {self.data_type}\n    dims: [ {dims} ]{reshape}\n  }}'


def graph_outputs(manifest: Manifest, names: set[str]) -> list[TensorSpec]:
    """The graph's outputs as Triton sees them (those of ``names``, the graph's output names)."""
    from svdh_runtime.areas import HANDS, grade_columns

    outputs, columns = manifest.outputs, len(grade_columns())
    shapes = {
        "score": TensorSpec("score", (1,), scalar=True),
        "severity_probs": TensorSpec("severity_probs", (len(outputs.severity_classes),)),
        "cam": TensorSpec("cam", (outputs.cam_height, outputs.cam_width)),
        "areas": TensorSpec("areas", (columns,)),
        "hands": TensorSpec("hands", (len(HANDS),)),
        "joints": TensorSpec("joints", (columns, 2)),
        GATE_OUTPUT: TensorSpec(GATE_OUTPUT, (1,), scalar=True),
    }
    wanted = [*OUTPUT_NAMES, *(JOINT_OUTPUTS if outputs.per_area else ()), GATE_OUTPUT]
    return [shapes[name] for name in wanted if name in names or name in OUTPUT_NAMES]


def answer_outputs(manifest: Manifest) -> list[TensorSpec]:
    """The outputs of the Python model and of the ensemble (see :func:`svdh_runtime.triton_models.answer_tensors`)."""
    from svdh_runtime.areas import grade_columns

    outputs = manifest.outputs
    answers = [
        TensorSpec("score", (1,)),
        TensorSpec("severity_probs", (len(outputs.severity_classes),)),
        TensorSpec("cam", (outputs.cam_height, outputs.cam_width)),
        TensorSpec("gate_distance", (1,)),
    ]
    if outputs.per_area:
        answers.append(TensorSpec("areas", (len(grade_columns()),)))
    return [*answers, TensorSpec("result_json", (1,), "TYPE_STRING")]


FILE_BYTES = TensorSpec(INPUT, (1,), "TYPE_STRING")
CONTEXT_TENSOR = TensorSpec(CONTEXT, (1,), "TYPE_STRING")


def model_config(
    name: str,
    kind_line: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    options: TritonOptions,
    instance_kind: str = "cpu",
    parameters: dict[str, str] | None = None,
    ensemble_steps: str = "",
) -> str:
    """A model configuration in protobuf text format; ``kind_line``: its ``platform:`` or ``backend:`` line;
    ``ensemble_steps``: an ensemble's scheduling, which takes the place of batching and instances (its steps
    have those)."""
    preferred = sorted({b for b in (1, 2, 4, options.max_batch_size) if b <= options.max_batch_size})
    batching = f"""dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in preferred)} ]
  max_queue_delay_microseconds: {options.max_queue_delay_us}
}}
instance_group [
  {{
    count: {options.instances}
    kind: KIND_{instance_kind.upper()}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""
    if ensemble_steps:
        batching = ensemble_steps
    params = "".join(
        f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}\n'
        for key, value in (parameters or {}).items()
    )
    tensors = {"input": ",\n".join(t.pbtxt() for t in inputs), "output": ",\n".join(t.pbtxt() for t in outputs)}
    listed = "".join(f"{kind} [\n{text}\n]\n" for kind, text in tensors.items())
    return f'name: "{name}"\n{kind_line}\nmax_batch_size: {options.max_batch_size}\n{listed}{batching}{params}'


def _model_label(manifest: Manifest, sha256: str) -> dict[str, str]:
    return {"svdh_model": f"{manifest.name} {manifest.version} sha256:{sha256}"}


def config_pbtxt(
    manifest: Manifest, options: TritonOptions, served_sha256: str | None = None, names: set[str] | None = None
) -> str:
    """The graph step's configuration (``options.ensemble`` platform; ``names``: the graph's output names)."""
    spec = manifest.preprocessing
    image = TensorSpec("image", (spec.channels, spec.height, spec.width))
    sha256 = served_sha256 or manifest.files[MODEL_FILE]
    return model_config(
        options.model("graph"),
        f'platform: "{options.ensemble or PLATFORMS[0]}"',
        [image],
        graph_outputs(manifest, names if names is not None else set(OUTPUT_NAMES)),
        options,
        options.kind,
        _model_label(manifest, sha256),
    )


def python_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], options: TritonOptions,
                  manifest: Manifest) -> str:  # fmt: skip
    """A Python-backend model's configuration (CPU instances)."""
    parameters = {
        "backend": options.backend,
        "interval_level": f"{options.interval_level:g}",
        **_model_label(manifest, manifest.files[MODEL_FILE]),
    }
    return model_config(name, 'backend: "python"', inputs, outputs, options, "cpu", parameters)


def ensemble_config(manifest: Manifest, options: TritonOptions, graph: list[TensorSpec]) -> str:
    """``<name>_ensemble``: prepare, graph, finish; the same input and outputs as the Python model."""

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        maps = [f'      input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
        maps += [f'      output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"

    answers = answer_outputs(manifest)
    steps = [
        step(options.model("prepare"), {INPUT: INPUT}, {"image": "canvas", CONTEXT: CONTEXT}),
        step(options.model("graph"), {"image": "canvas"}, {t.name: f"graph_{t.name}" for t in graph}),
        step(
            options.model("finish"),
            {**{t.name: f"graph_{t.name}" for t in graph}, CONTEXT: CONTEXT},
            {t.name: t.name for t in answers},
        ),
    ]
    scheduling = "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    return model_config(options.model("ensemble"), 'platform: "ensemble"', [FILE_BYTES], answers, options,
                        ensemble_steps=scheduling)  # fmt: skip


PYTHONPATH_PREAMBLE = '''import os
import site
import sys


def _honour_pythonpath() -> None:
    """Triton's Python stub starts Python without reading PYTHONPATH: its folders are put first here, with
    their .pth files (editable installs), so that a site can point the models at their own environment."""
    before = list(sys.path)
    for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if folder:
            site.addsitedir(folder)
    sys.path[:] = [p for p in sys.path if p not in before] + before


_honour_pythonpath()
'''
PYTHON_ENTRY = (
    '"""Triton Python-backend entry point written by svdh-export: the model is svdh_runtime\'s {cls}."""\n\n'
    + PYTHONPATH_PREAMBLE
    + "\nfrom svdh_runtime.triton_models import {cls} as TritonPythonModel  # noqa: E402,F401\n"
)


def choose_engine(bundle: Bundle, options: TritonOptions) -> EngineSidecar:
    """The engine to serve: the one named, else the only one in ``BUNDLE/engines/``; its batch profile must fit."""
    sidecars, problems = read_sidecars(bundle)
    if options.engine is not None:
        sidecars = [s for s in sidecars if s.plan == options.engine]
    if len(sidecars) != 1:
        found = ", ".join(s.plan for s in read_sidecars(bundle)[0]) or "none"
        hint = "; ".join(problems)
        raise BundleError(
            f"{bundle.path}: choose one TensorRT engine with --engine (found: {found}{'; ' + hint if hint else ''})"
        )
    sidecar = sidecars[0]
    if options.max_batch_size > sidecar.profile.max:
        raise BundleError(
            f"{ENGINES_DIR}/{sidecar.plan} accepts batches up to {sidecar.profile.max}; lower --max-batch"
        )
    return sidecar


def _write_checked(target: Path, payload: bytes, expected: str) -> None:
    """Write ``payload`` and read it back against its checksum."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    if sha256_file(target) != expected:
        raise BundleError(f"{target}: copy does not match the bundle's checksum")


def _stage_python_model(staging: Path, bundle: Bundle, options: TritonOptions, cls: str, config: str,
                        whole_bundle: bool) -> None:  # fmt: skip
    """A Python model: config, entry point, and the bundle (every file, verified) or its manifest only."""
    version = staging / str(options.version)
    (staging / "config.pbtxt").write_text(config, encoding="utf-8")
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(PYTHON_ENTRY.format(cls=cls), encoding="utf-8")
    copy = version / BUNDLE_DIR
    copy.mkdir()
    shutil.copyfile(bundle.path / MANIFEST_NAME, copy / MANIFEST_NAME)
    if not whole_bundle:
        return
    for name, expected in bundle.manifest.files.items():
        _write_checked(copy / name, bundle.read_verified(name), expected)
    if (bundle.path / ENGINES_DIR).is_dir():  # engines are checked against their sidecars when chosen
        shutil.copytree(bundle.path / ENGINES_DIR, copy / ENGINES_DIR)


def _stage_graph_model(staging: Path, bundle: Bundle, options: TritonOptions, graph: list[TensorSpec]) -> None:
    """The ensemble's graph step: model.onnx, or a TensorRT engine with its sidecar."""
    sidecar = choose_engine(bundle, options) if options.ensemble == "tensorrt_plan" else None
    if sidecar is None:
        served, payload, expected = MODEL_FILE, bundle.model_bytes, bundle.model_sha256
    else:
        served, payload, expected = "model.plan", read_verified_plan(bundle, sidecar), sidecar.plan_sha256
        (staging / "svdh_engine.json").write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n", encoding="utf-8")
    _write_checked(staging / str(options.version) / served, payload, expected)
    names = {t.name for t in graph}
    (staging / "config.pbtxt").write_text(config_pbtxt(bundle.manifest, options, expected, names), encoding="utf-8")
    shutil.copyfile(bundle.path / MANIFEST_NAME, staging / "svdh_manifest.json")


def _graph_output_names(bundle: Bundle) -> set[str]:
    import onnx

    return {output.name for output in onnx.load_model_from_string(bundle.model_bytes).graph.output}


def write_triton_repository(bundle_dir: Path, repo: Path, options: TritonOptions, force: bool = False) -> list[Path]:
    """Verify the bundle, then write its models into ``repo`` (all or none); returns their directories."""
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    if manifest.outputs.cam_height < 1:
        raise BundleError(f"{bundle_dir}: manifest has no CAM size; re-export the bundle")
    steps = ["", "prepare", "graph", "finish", "ensemble"] if options.ensemble else [""]
    targets = [Path(repo) / options.model(step) for step in steps]
    present = [str(t) for t in targets if t.exists()]
    if present and not force:
        raise BundleError(f"{', '.join(present)}: already exists; pass --force to replace it")
    answers = answer_outputs(manifest)
    stagings = {step: Path(repo) / f".{options.model(step)}.partial" for step in steps}
    try:
        for staging in stagings.values():
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
        _stage_python_model(stagings[""], bundle, options, "ScoreModel",
                            python_config(options.name, [FILE_BYTES], answers, options, manifest), True)  # fmt: skip
        if options.ensemble:
            spec = manifest.preprocessing
            image = TensorSpec("image", (spec.channels, spec.height, spec.width))
            graph = graph_outputs(manifest, _graph_output_names(bundle))
            prepare = python_config(options.model("prepare"), [FILE_BYTES], [image, CONTEXT_TENSOR], options, manifest)
            finish = python_config(options.model("finish"), [*graph, CONTEXT_TENSOR], answers, options, manifest)
            _stage_python_model(stagings["prepare"], bundle, options, "PrepareModel", prepare, False)
            _stage_graph_model(stagings["graph"], bundle, options, graph)
            _stage_python_model(stagings["finish"], bundle, options, "FinishModel", finish, False)
            (stagings["ensemble"] / str(options.version)).mkdir()
            (stagings["ensemble"] / "config.pbtxt").write_text(ensemble_config(manifest, options, graph), "utf-8")
    except BaseException:
        for staging in stagings.values():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    for step, target in zip(steps, targets):
        if target.exists():
            shutil.rmtree(target)
        stagings[step].replace(target)
    return targets
