@intervention
Feature: Operators fix runs by hand, through the engine
  When a run is stuck, failed or about to do the wrong thing, an operator steps
  in: cancels it, pauses it, retries or skips a step, resumes it from an earlier
  step, or corrects its input. Every such action is recorded in the run log with
  who, when and why; the engine carries it out exactly as recorded, and the run
  still replays exactly from its log afterwards.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                                                     | then                |
      | map      | transform | {id: order.id, total: order.sum}                                         | push                |
      | push     | http_call | POST the mapped order to /orders, up to 2 attempts, backing off 1 minute | check               |
      | check    | branch    | when push answered 200                                                   | done, else rejected |
      | done     | terminate | succeeded                                                                |                     |
      | rejected | terminate | failed: the order service refused it                                     |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  @smoke
  Scenario Outline: An operator <action> of a run <situation>
    Given a run of "<workflow>" that is <situation>
    When "dana@acme.example" <action> because "the customer called about it"
    Then the run is <then>
    And the run replays exactly from its log

    Examples: A run waiting for its follow-up
      | situation         | workflow        | action                      | then      |
      | waiting in "wait" | order-follow-up | cancels the run             | canceled  |
      | waiting in "wait" | order-follow-up | pauses the run              | paused    |
      | waiting in "wait" | order-follow-up | skips "wait"                | succeeded |
      | waiting in "wait" | order-follow-up | patches the run's input     | waiting   |
      | waiting in "wait" | order-follow-up | resumes the run from "wait" | waiting   |

    Examples: A run between two attempts at the order
      | situation                  | workflow   | action          | then      |
      | between attempts of "push" | order-sync | retries "push"  | succeeded |
      | between attempts of "push" | order-sync | cancels the run | canceled  |
      | between attempts of "push" | order-sync | pauses the run  | paused    |

    Examples: A run whose order was refused
      | situation        | workflow   | action                     | then      |
      | failed at "push" | order-sync | retries "push"             | succeeded |
      | failed at "push" | order-sync | resumes the run from "map" | succeeded |
      | failed at "push" | order-sync | patches the run's input    | failed    |

    Examples: A run its worker left in the middle of the call
      | situation                                        | workflow   | action          | then      |
      | left in the middle of "push" by a crashed worker | order-sync | retries "push"  | succeeded |
      | left in the middle of "push" by a crashed worker | order-sync | cancels the run | canceled  |

    Examples: A paused run
      | situation        | workflow        | action                  | then     |
      | paused in "wait" | order-follow-up | unpauses the run        | waiting  |
      | paused in "wait" | order-follow-up | cancels the run         | canceled |
      | paused in "wait" | order-follow-up | skips "wait"            | paused   |
      | paused in "wait" | order-follow-up | patches the run's input | paused   |

  Scenario Outline: An operator cannot <action> a run <situation>
    Given a run of "<workflow>" that is <situation>
    When "dana@acme.example" tries to <action> because "the customer called about it"
    Then the action is refused because "<reason>"
    And the run log is unchanged

    Examples:
      | situation         | workflow        | action                     | reason                                    |
      | finished          | order-sync      | cancel the run             | it already succeeded                      |
      | finished          | order-sync      | pause the run              | it already succeeded                      |
      | finished          | order-sync      | retry "push"               | it succeeded; resume it from a step       |
      | finished          | order-sync      | resume the run from "map"  | it succeeded; start a new run             |
      | finished          | order-sync      | patch the run's input      | its input can change nothing any more     |
      | waiting in "wait" | order-follow-up | unpause the run            | it is not paused                          |
      | paused in "wait"  | order-follow-up | pause the run              | it is already paused                      |
      | waiting in "wait" | order-follow-up | retry "ship"               | has no step                               |
      | failed at "push"  | order-sync      | retry "map"                | succeeded; resume from it to run it again |
      | failed at "push"  | order-sync      | resume the run from "done" | was never reached in this run             |
      | failed at "push"  | order-sync      | skip "check"               | is not the step the run is at             |

  Scenario: A corrected input that cannot be stored is refused, and the waiting run is left as it was
    Given a run of "order-follow-up" that is waiting in "wait"
    When "lee@acme.example" tries to patch the run's input because "the customer added a note", with:
      """json
      { "order": { "note": "before\u0000after" } }
      """
    Then the action is refused because "NUL character"
    And the run log is unchanged

  Scenario: A correction that is not an object of fields is refused, and the waiting run is left as it was
    Given a run of "order-follow-up" that is waiting in "wait"
    When "lee@acme.example" tries to patch the run's input because "the customer sent a list of totals", with:
      """json
      [42.5, 40.0]
      """
    Then the action is refused because "JSON object"
    And the run log is unchanged

  @tamper
  Scenario Outline: A run that is <situation>, its view forged as <forged>, still refuses to <action>
    Given a run of "<workflow>" that is <situation>
    When someone marks the run as <forged> behind the engine's back
    And "dana@acme.example" tries to <action> because "the dashboard says so"
    Then the action is refused because "<reason>"
    And the run log is unchanged

    Examples:
      | situation         | workflow        | forged  | action                    | reason                        |
      | finished          | order-sync      | failed  | resume the run from "map" | it succeeded; start a new run |
      | waiting in "wait" | order-follow-up | paused  | unpause the run           | it is not paused              |
      | failed at "push"  | order-sync      | waiting | cancel the run            | it already failed             |
