"""The command line: the top floor of billing-recon.

``billing-recon`` parses arguments (main.py), runs the commands (commands.py, demo.py) and
drives the Prefect flows from a terminal (driver.py: start, watch, resume or continue a ticket's
run). It imports the flows, tasks and blocks and the core; nothing imports it.
"""
