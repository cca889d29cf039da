"""CIFAR from the official files to the net's input, one job per module, no cycle between them:

files.py (what each release holds, where) -> fetch.py (download once, whole files) -> cifar.py (the safe
reader: numpy arrays, the held-out split) -> normalization.py (plug-ins fitted on the training split) and
augment.py (crops and flips on the device) -> stream.py (the loader protocol) -> device_loader.py and
torchvision_loader.py (the two pipelines) -> run_data.py (a run's data on its device).
"""
