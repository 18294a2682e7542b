"""Stage 8, applications: sort a folder, the zoomed-vs-normal filter, the demo, and the web service."""
