"""What the kernel ops share: backend tables and dispatch (`dispatch`), the Triton plumbing (`triton_util`)."""
