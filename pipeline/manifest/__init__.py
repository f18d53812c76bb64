"""The shared vocabulary of a run: the per-image record, the manifest schema, where things live
under the output prefix."""
