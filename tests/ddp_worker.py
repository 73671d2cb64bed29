"""Launched by torchrun in test_distributed.py: one fit, then this rank's shard and weights."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from svdh_trainer.config import load_config
from svdh_trainer.fit import fit

if __name__ == "__main__":
    recipe, report = Path(sys.argv[1]), Path(sys.argv[2])
    import torch.distributed as dist

    result = fit(load_config(recipe), log=lambda _: None)
    rank = dist.get_rank()
    (report / f"rank{rank}.json").write_text(json.dumps({"seen": list(result.images_seen)}))
    save_file({k: v.contiguous() for k, v in result.net.state_dict().items()}, str(report / f"rank{rank}.safetensors"))
    dist.destroy_process_group()
