"""GoTrue subset served under ``/auth/v1`` (see :mod:`devstack.auth`)."""
