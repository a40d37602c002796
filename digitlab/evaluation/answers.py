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
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero((predicted != labels) | refused)
    return {
        "count": len(labels),
        "fingerprint": fingerprint(images),
        "wrong": [
            {
                "index": int(i),
                "label": int(labels[i]),
                "answer": int(predicted[i]),
                "confidence": probability(probabilities[i].max(), CONFIDENCE_DECIMALS),
                "refused": bool(refused[i]),
            }
            for i in wrong
        ],
    }


def nondigit_answers(images: np.ndarray, kinds: np.ndarray, probabilities: np.ndarray, refused: np.ndarray) -> dict:
    """The test non-digits' answers: those accepted as a digit, each with its kind, answer and confidence."""
    predicted = probabilities.argmax(axis=1)
    return {
        "count": len(kinds),
        "fingerprint": fingerprint(images),
        "wrong": [
            {
                "index": int(i),
                "kind": str(kinds[i]),
                "answer": int(predicted[i]),
                "confidence": probability(probabilities[i].max(), CONFIDENCE_DECIMALS),
            }
            for i in np.flatnonzero(~refused)
        ],
    }


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
