# The eta A/B of the cpu study's ddpm (docs/models.md), as run on 2026-12-01 on the 2-core CPU (~35 min with other jobs).
# It ran as `pretrained:ddpm`, which then served these weights; they now live in the run folder (same sha256),
# pretrained:ddpm is the protocol of record's ddpm.
set -e
source .venv/bin/activate  # from the repository root
export BLOODGEN_DATA=../shared/data/bloodmnist.npz BLOODGEN_INCEPTION_WEIGHTS=../shared/data/pt_inception-2015-12-05_fc-zeroed.pth
for eta in 0 1; do
  bloodgen sample results/runs/ddpm-s0-37d4c90c79e8 -n 300 --seed 0 --eta $eta --out ddpm-eta$eta.npz
done
for eta in 0 1; do
  bloodgen evaluate ddpm-eta$eta.npz --n 300 --seeds 2 --quiet --json benchmarks/results/ddpm-eta/eval-eta$eta.json --markdown benchmarks/results/ddpm-eta/eval-eta$eta.md
done
