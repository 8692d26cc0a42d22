"""The ``wirespeed`` command and its subcommands: demo, bench, build flows, Xilinx plan, exports, traffic.
"""
