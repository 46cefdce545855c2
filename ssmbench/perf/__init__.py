"""Everything that measures speed, apart from the core (training, evaluation, results):

  kernels     every kernel op through every backend over a sweep of lengths (`ssmbench-profile`; the kernels'
              speed targets: `ssmbench-profile profile=targets`)
  official    the official mamba_ssm kernel's times beside the scan rows: same process, or the committed CSV
  generation  decode throughput, Mamba against a Transformer (`ssmbench-generate`)
  tasks       task generators against a training step (`ssmbench-taskbench`)
  training    ms per training step, eager against CUDA graphs (`ssmbench-trainbench`)
  report      tables and plots of those studies (`ssmbench-profile-report`)
  cli         the Hydra apps of kernels, generation and tasks
  timing      the clocks, summaries, copy bandwidth, memory and device helpers all of them (and scripts/) share
"""
