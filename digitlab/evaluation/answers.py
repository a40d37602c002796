"""What the model answered for each test image, small enough for git: the images it got wrong.

evaluate writes reports/evaluate/answers.json, and the review pairs two versions' files image by image
(digitlab/review/paired.py): an image one version got wrong and the other right is what a change fixed or
broke. Every image not listed was answered right, so the file holds only
  digits     the test digits misread (the most probable digit is not the label) or refused as "not a digit";
  nondigits  the test non-digits accepted as a digit.
Each set also carries its size and a fingerprint of its images, so that two files are paired only when they
answered the same images. Confidences are rounded to CONFIDENCE_DECIMALS, a precision every CPU agrees on.
"""

import json

import numpy as np

from digitlab.files.arrays import fingerprint
from digitlab.inference.rounding import CONFIDENCE_DECIMALS, probability

FILE_NAME = "answers.json"


def digit_answers(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, refused: np.ndarray) -> dict:
    """The test digits' answers: those misread or refused, each with its label, answer and confidence."""
    wrong = np.flatnonzero((probabilities.argmax(axis=1) != labels) | refused)
    return answer_set(
        images, probabilities, wrong, lambda i: ({"label": int(labels[i])}, {"refused": bool(refused[i])})
    )


def nondigit_answers(images: np.ndarray, kinds: np.ndarray, probabilities: np.ndarray, refused: np.ndarray) -> dict:
    """The test non-digits' answers: those accepted as a digit, each with its kind, answer and confidence."""
    return answer_set(images, probabilities, np.flatnonzero(~refused), lambda i: ({"kind": str(kinds[i])}, {}))


def answer_set(images: np.ndarray, probabilities: np.ndarray, wrong: np.ndarray, fields) -> dict:
    """How many images, their fingerprint, and a row for each of the `wrong` ones: its index, what `fields(i)` gives
    before and after its answer and confidence."""
    predicted = probabilities.argmax(axis=1)

    def row(i: int) -> dict:
        before, after = fields(i)
        confidence = probability(probabilities[i].max(), CONFIDENCE_DECIMALS)
        return {"index": int(i), **before, "answer": int(predicted[i]), "confidence": confidence, **after}

    return {"count": len(images), "fingerprint": fingerprint(images), "wrong": [row(i) for i in wrong]}


def to_json(answers: dict) -> str:
    """The file's text: one line per image, so that a diff of two versions reads image by image."""
    items = []
    for name, value in answers.items():
        if isinstance(value, dict) and "wrong" in value:
            head = json.dumps({key: item for key, item in value.items() if key != "wrong"})[:-1]
            rows = ",\n".join(f"    {json.dumps(row)}" for row in value["wrong"])
            items.append(
                f'  "{name}": {head}, "wrong": [\n{rows}\n  ]}}' if rows else f'  "{name}": {head}, "wrong": []}}'
            )
        else:
            items.append(f'  "{name}": {json.dumps(value)}')
    return "{\n" + ",\n".join(items) + "\n}\n"
