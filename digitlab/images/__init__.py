"""Images as users make them: any image turned into the MNIST look (mnist_look), images in the same looks
that hold no digit (nondigits), letters, doodles and words drawn as pen strokes in many hands (strokes), and
MNIST digits made into what users send (user_digits)."""
