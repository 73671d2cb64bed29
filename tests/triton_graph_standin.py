"""Stand-in for Triton's onnxruntime backend in the ensemble's graph step (the CPU server the tests run has
only the Python backend): runs the step's own ``model.onnx`` with ONNX Runtime, the same inputs and outputs."""

import json
import os
import site
import sys
from pathlib import Path

_before = list(sys.path)
for _folder in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _folder:
        site.addsitedir(_folder)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

import onnxruntime  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / str(args["model_version"])
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.outputs = [output["name"] for output in json.loads(args["model_config"])["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            values = self.session.run(self.outputs, {"image": image})
            tensors = [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, values)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
