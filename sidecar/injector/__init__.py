"""Kubernetes mutating admission webhook that adds the credential sidecar to annotated pods.

``patch`` decides (a pure function of the pod), ``webhook`` speaks AdmissionReview v1 over
HTTPS, ``certs`` owns the serving certificate, ``cli`` wires them for ``sidecar injector``.
"""
