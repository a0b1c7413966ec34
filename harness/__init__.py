"""FaceSR cluster-competition harness: the ``harness`` command and the layers below it."""
