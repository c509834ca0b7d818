"""The one exception the data layer raises for bad input."""


class DataError(ValueError):
    """Bad or unreadable data. The message is one line that names the file and what is wrong."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # picklable and copyable (Ray ships a trial's exception to the driver)
        return type(self), (self.path, self.problem)
