"""`python -m gpu_claim_job PROCESSES HOLD_S`: claims GPUs as job.run_job does before training, prints what it
got and when, holds them HOLD_S seconds, prints when it gave them back (tests/test_placement.py)."""
import json
import logging
import sys
import time

from resnet_cifar.config import Device
from resnet_cifar.placement import gpus_for_job

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
with gpus_for_job(Device.auto, int(sys.argv[1])) as gpus:
    print(json.dumps({"gpus": gpus, "at": time.time()}), flush=True)
    time.sleep(float(sys.argv[2]))
print(json.dumps({"released": time.time()}), flush=True)
