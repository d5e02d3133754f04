#!/usr/bin/env python3
"""Train the demo model from scikit-learn's bundled iris data (no download).

Writes into DIR: iris.joblib (a RandomForest classifier), iris-reference.csv
(reference inputs with a header row, for drift statistics) and sample.json
(a sample request with the model's expected output).
usage: train_iris.py DIR [--seed N] [--estimators N]
"""
import argparse
import csv
import json
import os

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--estimators", type=int, default=20)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_iris()
    model = RandomForestClassifier(n_estimators=args.estimators, max_depth=4, random_state=args.seed)
    model.fit(data.data, data.target)
    joblib.dump(model, os.path.join(args.out, "iris.joblib"))
    with open(os.path.join(args.out, "iris-reference.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width"])
        writer.writerows(data.data.tolist())
    rows = [data.data[0].tolist(), data.data[60].tolist(), data.data[120].tolist()]
    sample = {"instances": rows, "expected": [int(v) for v in model.predict(rows)]}
    with open(os.path.join(args.out, "sample.json"), "w") as handle:
        json.dump(sample, handle)
    print(json.dumps({"model": os.path.join(args.out, "iris.joblib"), **sample}))


if __name__ == "__main__":
    main()
