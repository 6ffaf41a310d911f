"""Command lines of the package: `patchconvnet-train`, `patchconvnet-push-*` and `patchconvnet-demo`."""
