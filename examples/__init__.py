"""Small programs that show how to use Tally from the outside."""
