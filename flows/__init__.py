"""Prefect flows: compositions of the tasks in ``tasks`` that read as the pipeline."""
