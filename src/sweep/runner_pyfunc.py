"""The pyfunc loader of runner's MLflow models (shipped inside each model's `code/` folder).

A runner model is one ONNX graph that holds the fitted preprocessing and the model: one input
per input column (double, int64, bool or string, as the training data held it) and 1-D outputs,
`prediction` (the original label, or the value) and `proba_<class>` for each class. This loader
feeds onnxruntime one numpy column per input, as the graph expects: text columns of any pandas
string dtype as Python strings, a missing text value as "" (the graph's missing category),
missing numbers as NaN (the graph fills them as training did).
"""
import numpy as np
import onnxruntime
import pandas as pd

_NUMPY = {"tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


class RunnerOnnxModel:
    def __init__(self, path):
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.type, len(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def get_raw_model(self):
        return self.session

    @staticmethod
    def _column(frame, name, kind, rank):
        column = frame[name]
        if kind == "tensor(string)":
            values = np.array(["" if pd.isna(v) else str(v) for v in column], dtype=object)
        elif kind == "tensor(double)":
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = column.to_numpy(dtype=_NUMPY[kind])
        return values.reshape(-1, 1) if rank == 2 else values

    def predict(self, data, params=None):
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        feeds = {n: self._column(frame, n, k, r) for n, k, r in self.inputs}
        results = self.session.run(self.outputs, feeds)
        return pd.DataFrame({n: np.asarray(v).reshape(-1) for n, v in zip(self.outputs, results)})


def _load_pyfunc(path):
    return RunnerOnnxModel(path)
