"""One module per question a chapter of the book asks. Each returns typed results (dataclasses) and the
sentence that states what they show, generated from the numbers, so a chapter says what its numbers say."""
