"""End-to-end benchmark of relay against the machine's own limits (`make bench`)."""
