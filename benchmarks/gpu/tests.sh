#!/bin/bash
# The tests that failed in check.sh's run on the H200, rerun there after their fixes (same carry: .whl, .gpu)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --target /tmp/site .whl/*.whl . || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 XTC_TEST_GLUE_DIR=$PWD/.gpu/glue
python3 -m pytest -q -p no:cacheprovider -n 4 -W ignore::UserWarning \
  "tests/test_pipeline.py::test_killed_run_resumes_to_the_same_result" \
  "tests/test_pipeline.py::test_teacher_outputs_in_files_are_read_by_the_next_run" \
  "tests/test_pipeline.py::test_trimming_a_vocabulary_it_cannot_is_refused_before_training" tests/test_train.py 2>&1 | tee $OUT/tests.txt | grep -v "^  " | tail -40
