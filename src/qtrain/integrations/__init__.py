"""Optional bridges to other quantum SDKs (``pip install 'qtrain[qiskit]'`` /
``'qtrain[pennylane]'``). Nothing in the qtrain core imports these modules."""
