#!/usr/bin/env bash
# The protocol of record on one GPU in about 10 minutes: every family's `gpu` recipe trained for seeds
# 0-4 (all 20 trainings at once, one process each), each run evaluated on its own draw of 10,000
# generated vs 10,000 real images, the 10k floor beside them, and the report.
#
#   benchmarks/gpu_record.sh stage                   # only copy .gpu/* to /tmp/bloodgen-gpu (first call)
#   benchmarks/gpu_record.sh run [OUT] [MINUTES]     # OUT default study-gpu, MINUTES default 9
#
# Needs BLOODGEN_DATA and BLOODGEN_INCEPTION_WEIGHTS, or the files in .gpu/ (or staged in /tmp/bloodgen-gpu
# by an earlier call on the same machine): bloodmnist.npz and the FID weights, whole or as parts
# inception.pth.part-* (96 MB do not fit one 64 MB transfer; docs/study.md, "The protocol of record").
# On a machine without internet, wheels of the missing packages (diffusers, pytorch-fid, medmnist) in
# .whl/ are installed to /tmp/site first. Exit 3: MINUTES ran out with units left; run it again.
set -euo pipefail
MODE=${1:-run}
OUT=${2:-study-gpu}
MINUTES=${3:-9}
STAGE=/tmp/bloodgen-gpu
cd "$(dirname "$0")/.."
mkdir -p "$STAGE"
if [ -d .gpu ]; then cp -r .gpu/. "$STAGE"/; fi
if [ "$MODE" = stage ]; then ls -l "$STAGE"; exit 0; fi
if [ "$MODE" != run ]; then echo "usage: $0 stage | run [OUT] [MINUTES]" >&2; exit 2; fi

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${BLOODGEN_INCEPTION_WEIGHTS:-}" ]; then
    if compgen -G "$STAGE/inception.pth.part-*" >/dev/null; then
        cat "$STAGE"/inception.pth.part-* > "$STAGE/inception.pth"
    fi
    export BLOODGEN_INCEPTION_WEIGHTS=$STAGE/inception.pth
fi
export BLOODGEN_DATA=${BLOODGEN_DATA:-$STAGE/bloodmnist.npz}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
start=$(date +%s)
status=0
python3 -m bloodgen study --preset gpu --out "$OUT" --max-minutes "$MINUTES" --no-progress || status=$?
echo "gpu_record: bloodgen study exited $status after $(( $(date +%s) - start )) s; report in $OUT/report.md"
exit $status
