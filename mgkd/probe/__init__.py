"""Analyses of trained models: prediction noise and calibration (:mod:`.noise`), linear CKA
between a teacher's and a student's stages (:mod:`.cka`) and linear-probe transfer to another
data set (:mod:`.transfer`). :mod:`.modelfile` reads the model files they take, :mod:`.outputs`
runs a frozen model over a split once."""
