#!/usr/bin/env bash
# Rebuilds the spam model the project ships (deploy/spam/model.txt) from the labelled corpus:
# token statistics only (tokens seen in at least 3 messages), never message texts.
#   scripts/train-model.sh [CORPUS_DIR]     (default: ../shared/corpus/spamassassin)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${1:-../shared/corpus/spamassassin}"
[ -d "$corpus/spam-1" ] || { echo "train-model: no corpus at $corpus (expected spam-1, spam-2, easy-ham-1, easy-ham-2, hard-ham-1)" >&2; exit 2; }
swift build --product smgctl >/dev/null 2>&1 || { swift build --product smgctl; exit 1; }
"$(swift build --show-bin-path)/smgctl" train \
  --spam "$corpus/spam-1" "$corpus/spam-2" \
  --ham "$corpus/easy-ham-1" "$corpus/easy-ham-2" "$corpus/hard-ham-1" \
  --write-model deploy/spam/model.txt --min-count 3
