# The eta A/B of the shipped ddpm (docs/models.md), as run on 2026-12-01 on the 2-core CPU (~35 min with other jobs).
set -e
source .venv/bin/activate  # from the repository root
export BLOODGEN_DATA=/work/shared/data/bloodmnist.npz BLOODGEN_INCEPTION_WEIGHTS=/work/shared/data/pt_inception-2015-12-05_fc-zeroed.pth
for eta in 0 1; do
  bloodgen sample pretrained:ddpm -n 300 --seed 0 --eta $eta --out /tmp/ddpm-eta$eta.npz
done
for eta in 0 1; do
  bloodgen evaluate /tmp/ddpm-eta$eta.npz --n 300 --seeds 2 --quiet --json benchmarks/results/ddpm-eta/eval-eta$eta.json --markdown benchmarks/results/ddpm-eta/eval-eta$eta.md
done
