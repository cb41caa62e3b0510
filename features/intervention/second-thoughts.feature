@intervention
Feature: Operators change their minds, and the run follows the last word
  Operators do not always get it right the first time: a run is held, then
  canceled; canceled, then started again; refused, then resumed from the call
  itself. Each action builds on the one before it, the run does what the last
  one says, the audit trail reads every one of them in order, and an action the
  run's state no longer allows is refused with a reason and changes nothing.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario: A follow-up held for review and then canceled never sends its reminder, even once its hour has passed
    Given a run of "order-follow-up" that is paused in "wait"
    When "lee@acme.example" cancels the run because "the customer withdrew the order"
    And the clock moves forward 2 hours
    Then the run is canceled
    And the order service was never called
    And the run's audit trail reads:
      | what         | by               | reason                                                        |
      | run started  |                  |                                                               |
      | pause        | ops@acme.example | held for review                                               |
      | cancel       | lee@acme.example | the customer withdrew the order                               |
      | run canceled |                  | canceled by lee@acme.example: the customer withdrew the order |

  Scenario: A follow-up canceled by mistake and resumed from its wait waits the hour again and sends its reminder once
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "canceled the wrong order"
    And "dana@acme.example" resumes the run from "wait" because "that was the wrong order; this one goes on"
    And the clock moves forward 1 hour
    Then the run succeeds
    And the order service received the order exactly once

  Scenario: A refused order resumed from the call itself is sent again under a new key and taken
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" resumes the run from "push" because "the order service fixed its price list"
    Then the run succeeds
    And "push" was sent again under a new idempotency key
    And the run replays exactly from its log

  Scenario Outline: A run that is <situation> refuses an operator who tries to <action>
    Given a run of "<workflow>" that is <situation>
    When "dana@acme.example" tries to <action> because "the customer called about it"
    Then the action is refused because "<reason>"
    And the run log is unchanged

    Examples:
      | situation        | workflow        | action                       | reason                        |
      | finished         | order-sync      | skip "push"                  | it succeeded                  |
      | finished         | order-sync      | unpause the run              | it is not paused              |
      | failed at "push" | order-sync      | pause the run                | it already failed             |
      | failed at "push" | order-sync      | cancel the run               | it already failed             |
      | paused in "wait" | order-follow-up | resume the run from "remind" | was never reached in this run |

  Scenario: A canceled follow-up cannot be retried: only resuming reopens it
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "the customer withdrew the order"
    And "lee@acme.example" tries to retry "wait" because "the customer called back"
    Then the action is refused because "it was canceled; resume it from a step instead"
    And the run is canceled
    And the order service was never called

  @db-faults
  Scenario: An operator holds a run for review while the database drops the engine's connections, and the order waits for the unpause
    Given the worker will stall after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And the database drops the engine's connections
    And "dana@acme.example" pauses the run during that pause, because "the total looks wrong"
    Then the run is paused
    And the order service was never called
