#!/bin/sh
# Runs a GoogleTest binary (one shard of it, under GTEST_TOTAL_SHARDS / GTEST_SHARD_INDEX) and
# fails when it ended before its last test. gtest deletes TEST_PREMATURE_EXIT_FILE only at a
# normal end: without this check a test calling exit(0) would pass the rest of its shard off as
# passed, since ctest sees only the exit code (a review's finding).
set -u
marker=$(mktemp)
TEST_PREMATURE_EXIT_FILE=$marker "$@"
rc=$?
if [ -e "$marker" ]; then
  rm -f "$marker"
  echo "run_gtest_shard.sh: $1 ended before its last test (exit code $rc)" >&2
  exit 1
fi
exit "$rc"
