"""The web UI (`setseq ui`, the `ui` extra): glue over the CLI's commands, above the CLI.

workspace.py  the folder of clips, runs and exports, and the fence around it
jobs.py       one job at a time on a worker thread; a run's record on disk (RUN.job.json)
handlers.py   what each control does, as plain functions (tested without a browser)
app.py        the Gradio page over the handlers, and `serve`
__main__.py   `python -m setseq.ui`, which `setseq ui` hands its process to
"""
