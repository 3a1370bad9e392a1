#!/bin/sh
# Regenerates the README's pictures in docs/img/ (SVG): sh docs/make_pictures.sh
# Needs the plot and torch extras (pip install -e '.[plot,torch]'); about two minutes on a CPU.
set -eu
img=$(cd "$(dirname "$0")" && pwd)/img
work=$(mktemp -d)
cd "$work"
sysplan train --model 70b --cluster dgx-h100 --gpus 64 --pp 4 --vpp 2 --global-batch 64 \
    --top 1 --plot train > /dev/null
sysplan train --model 70b --cluster dgx-h100 --gpus 2048 --objective cost --train-tokens 15T \
    --gpu-hour-cost 2.5 --top 1 --plot cost > /dev/null
sysplan serve --model 8b --cluster dgx-h100 --gpus 8 --isl 1000 --osl 200 --slo ttft=300ms \
    --slo tpot=20ms --num-requests 400 --trials 0 --top 1 --plot serve > /dev/null
sysplan profile --device cpu --quick --world 4 > /dev/null
sysplan train --model 8b --cluster dgx-h100 --gpus 16 --tp 2 --pp 2 --json > plans.json
sysplan run plans.json --steps 5 --warmup 1 --plot run > /dev/null
cp train/train-timeline.svg train/train-memory.svg train/train-step.svg cost/train-cost.svg \
    serve/serve-pareto.svg serve/serve-latency.svg run/run-terms.svg "$img/"
rm -rf "$work"
ls -l "$img"
