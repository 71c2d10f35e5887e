"""The scenarios of ``tests/scenarios.py`` against a real OMERO server (see conftest.py
for the settings; skipped without them). The stand-in suite runs the same ones."""

from __future__ import annotations

import scenarios


def test_upload_reads_back_identically(target, multi_plate):
    scenarios.upload_reads_back_identically(target, multi_plate.folder)


def test_run_and_check_against_truth(target, normal_plate):
    scenarios.run_and_check_against_truth(target, normal_plate.folder)


def test_rerun_is_idempotent(target, tiny_plate, tmp_path):
    scenarios.rerun_is_idempotent(target, tiny_plate, tmp_path)


def test_describe_and_delete(target, tiny_plate):
    scenarios.describe_and_delete(target, tiny_plate)


def test_cancel_stops_and_attaches_nothing(target, normal_plate, tmp_path):
    scenarios.cancel_stops_and_attaches_nothing(target, normal_plate.folder, tmp_path)


def test_clients_run_the_script_and_read_its_outputs(target, tiny_plate):
    scenarios.clients_run_the_script_and_read_its_outputs(target, tiny_plate)


def test_colleagues_results_stay(target, colleague, tiny_plate):
    scenarios.colleagues_results_stay(target, colleague, tiny_plate)


def test_time_lapse_runs_and_gaps(target, timelapse_runs):
    scenarios.time_lapse_runs_and_gaps(target, timelapse_runs)


def test_no_wait_job_outlives_its_launcher(target, tiny_plate):
    scenarios.no_wait_job_outlives_its_launcher(target, tiny_plate)


def test_results_are_read_once(target, tiny_plate):
    scenarios.results_are_read_once(target, tiny_plate)


def test_pictures_once_per_run(target, tiny_plate):
    scenarios.pictures_once_per_run(target, tiny_plate)


def test_pixel_access_reads_the_same(target, tiny_plate):
    scenarios.pixel_access_reads_the_same(target, tiny_plate)
