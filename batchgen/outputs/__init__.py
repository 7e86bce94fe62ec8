"""Reading an output folder: status, summary, catalog, report and dataset exports."""
