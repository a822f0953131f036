"""Reading run dirs, best configs, export and reports (arrives with the analysis issue)."""
