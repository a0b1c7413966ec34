"""The judges' HTML report (``harness report``), rendered from run-directory files only.

Never imports torch or pynvml: :mod:`reports.rundata` reads the files, :mod:`reports.plots`
draws charts as inline SVG, :mod:`reports.render` assembles one self-contained page and
:mod:`harness.commands.report` is the command.
"""
