# CUDA Multi-Process Service for the GPU drivers (sourced: gpu_parallel.sh MPS=1, trainbench_share.sh).
# mps_start LOG: starts the daemon with this project's pipe and log folders (or joins the one another driver on
# this host already started: two drivers side by side, one per GPU) and checks that a CUDA program runs under it
# (with $py, the interpreter that has torch); returns non-zero, with a daemon it started stopped and the MPS
# variables unset, where it cannot (no daemon binary, no permission, clients that fail). mps_stop: stops the
# daemon if this shell started it (MPS_OWNED=1); one it joined is its starter's to stop.
mps_start() {
  local log=${1:-/dev/null}
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/ssmbench-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/ssmbench-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  # The daemon sees every GPU of the host and each client picks its own with CUDA_VISIBLE_DEVICES: the layout of
  # the 2-GPU call where MPS measurably worked (session 7). NVIDIA's guide starts the daemon under the GPU's
  # CUDA_VISIBLE_DEVICES instead, and then a client's device numbers would be read against the daemon's view; not
  # tried here. (The client check below runs under the caller's CUDA_VISIBLE_DEVICES, so a layout that does not
  # work falls back to time-slicing and says so.)
  MPS_OWNED=0
  if [ -S "$CUDA_MPS_PIPE_DIRECTORY/control" ] && pgrep -x nvidia-cuda-mps-control >/dev/null 2>&1; then
    echo "joining the MPS daemon already running on $CUDA_MPS_PIPE_DIRECTORY" >>"$log"
  elif env -u CUDA_VISIBLE_DEVICES nvidia-cuda-mps-control -d 2>>"$log"; then
    MPS_OWNED=1
  else
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    return 1
  fi
  if timeout 120 "${py:-python3}" -c "import torch; torch.ones(1, device='cuda').add_(1); torch.cuda.synchronize()" \
       >>"$log" 2>&1; then
    return 0
  fi
  mps_stop
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  return 1
}
mps_stop() {  # 'quit' lets the clients still running finish first
  if [ "${MPS_OWNED:-0}" = 1 ]; then echo quit | nvidia-cuda-mps-control 2>/dev/null; MPS_OWNED=0; fi
  return 0
}
