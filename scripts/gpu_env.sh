# Sourced by the scripts/gpu_*.sh jobs on the GPU host: $OUT, NVLink
# multicast off, the tch binary from gpu-bin/combiner.xz as $BIN, and the
# libtorch of the host's PyTorch on the library path.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# decompress once (carry replaces gpu-bin/ whole, so a binary here is
# this call's): concurrent jobs of one call share it
[ -x gpu-bin/combiner ] || { xz -dkf gpu-bin/combiner.xz && chmod +x gpu-bin/combiner; }
TD=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH=$TD/lib:$TD/../nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
BIN=$PWD/gpu-bin/combiner
