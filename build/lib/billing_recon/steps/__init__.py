"""The pipeline's steps as plain functions over ``Deps`` (no Prefect): the core of each task."""
