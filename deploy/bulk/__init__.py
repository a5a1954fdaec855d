"""Bulk scoring of an archive on Ray Data (``ser batch``): sources, stages, output folder, the job.

``pip install '.[ray]'`` installs Ray Data (and pyarrow); this package imports Ray only inside
:func:`deploy.bulk.job.run_batch`, so importing it costs nothing where Ray is absent.
"""
