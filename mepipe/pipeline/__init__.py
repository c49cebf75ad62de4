"""Orchestration: the artifact graph, Dask scheduling, the Zarr store, the build job."""
