"""Wire protocols of the scoring server, one module each, over the protocol-neutral
:mod:`~mlops_lab.serving.dataplane`. Each module translates requests and answers and declares its
routes; adding a protocol touches no other."""
