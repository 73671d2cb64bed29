"""Stand-in for Triton's onnxruntime backend in the ensemble's graph step (the CPU server the tests run has
only the Python backend): runs the step's own ``model.onnx`` with ONNX Runtime, the same inputs and outputs."""

# tests/triton_server.py puts svdh-export's PYTHONPATH preamble first (the server's Python ignores PYTHONPATH).
import json
from pathlib import Path

import onnxruntime
import triton_python_backend_utils as pb_utils


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
